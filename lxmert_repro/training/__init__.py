"""Training: the Accelerate loop, BertAdam + warmup-linear schedule, checkpoints/resume, metrics logging.

Entry points (each takes the composed Hydra config and returns the run's metrics dict):
    lxmert_repro.training.pretrain.train_pretrain(cfg) -> dict      # lxmert-pretrain
    lxmert_repro.training.finetune.train_task(cfg) -> dict          # lxmert-finetune (any task=; the task: tasks/)
    lxmert_repro.training.evaluate.run_evaluate(cfg) -> dict        # lxmert-evaluate
Modules: optim (BertAdam, param_groups, linear_warmup_schedule), loop (Trainer), checkpointing
(CheckpointManager, resolve_resume), sampler (EpochShuffleSampler), tracking (metrics.jsonl + trackers), throughput
(samples/s, tokens/s, MFU between log steps),
data_setup (prepared artifacts -> datasets), models (build/load/save model dirs), predict (lxmert-predict).
"""
