"""The Accelerate training loop shared by pretraining and VQA fine-tuning.

Task code supplies a ``loss_fn(model, batch, state) -> (loss, {name: 0-d tensor or float})`` and an optional
``eval_fn(model, state) -> {name: float}``; this module owns everything else: the accelerator
(CPU / GPUs / nodes, mixed precision, gradient accumulation), optimizer + schedule from config,
grad clipping, the seeded sampler, checkpoints and resume, metrics logging (losses, samples/s, tokens/s, model
FLOP/s, MFU), progress bars, the non-finite-loss stop, best-model keeping. Between log steps nothing is read back
to the host (a read stalls a GPU's launch queue): losses and the non-finite check stay on the device.
``trainer.batch_size`` is the GLOBAL batch per optimizer step (the paper's 256 over 4 GPUs): per-process batch =
batch_size / (processes x accumulation).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import DataLoader, Dataset

from lxmert_repro.config_schema import check, one_of
from lxmert_repro.data.bucketing import LengthBucketBatchSampler
from lxmert_repro.io_utils import atomic_write_json, atomic_write_text
from lxmert_repro.launch import use_cpu
from lxmert_repro.modeling.flops import TRAIN_FLOPS_PER_FORWARD
from lxmert_repro.training.checkpointing import (
    CheckpointManager,
    TrainerState,
    good_checkpoint_sentence,
    list_checkpoints,
    resolve_resume,
)
from lxmert_repro.training.optim import param_groups
from lxmert_repro.training.sampler import EpochShuffleSampler
from lxmert_repro.training.throughput import ThroughputMeter, device_peak_flops
from lxmert_repro.training.tracking import MetricsLogger, flatten, tracker_init_kwargs, tracker_names

log = logging.getLogger(__name__)

# per-task parts may be 0-d tensors (summed on the device, read at log steps) or floats
LossFn = Callable[[torch.nn.Module, Any, TrainerState], "tuple[torch.Tensor, Mapping[str, torch.Tensor | float]]"]
# model FLOPs of one forward on a batch (a number or a 0-d tensor): enables model_flops_per_s and MFU in the logs
FlopsFn = Callable[[Any], "torch.Tensor | float"]
EvalFn = Callable[[torch.nn.Module, TrainerState], "dict[str, float]"]
Callback = Callable[["Trainer", TrainerState], None]


@dataclass
class CompileConfig:
    """Schema of ``trainer.compile`` (configs/trainer/default.yaml says what each key does)."""

    enabled: bool = False
    backend: str = "inductor"
    mode: str = "default"
    fullgraph: bool = False

    def __post_init__(self) -> None:
        one_of(
            "trainer.compile.mode",
            self.mode,
            ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"),
        )


@dataclass
class TrainerConfig:
    """Schema of the ``trainer`` group (configs/trainer/)."""

    seed: int = 9595
    max_epochs: int = 20
    max_steps: int = -1
    batch_size: int = 256
    eval_batch_size: int | None = None
    grad_accum_steps: int = 1
    grad_clip: float = 1.0
    mixed_precision: str = "no"
    cpu: bool = False
    compile: CompileConfig = field(default_factory=CompileConfig)
    num_workers: int = 0
    shuffle: bool = True
    length_bucketing: bool = False
    bucket_window_batches: int = 50
    drop_last: bool = True
    log_every_n_steps: int = 50
    eval_every_n_epochs: int = 1
    checkpoint_every_n_steps: int = 0
    keep_last_k: int | None = 2
    resume: str | None = None
    progress_bar: bool = True
    ddp_find_unused_parameters: bool = True
    peak_flops: float | None = None  # device peak FLOP/s for MFU; null = the known-GPU table (none on CPU)

    def __post_init__(self) -> None:
        for key in (
            "batch_size",
            "grad_accum_steps",
            "log_every_n_steps",
            "eval_every_n_epochs",
            "bucket_window_batches",
        ):
            check(getattr(self, key) > 0, f"trainer.{key}", getattr(self, key), "a positive integer")
        for key in ("max_epochs", "num_workers", "checkpoint_every_n_steps"):
            check(getattr(self, key) >= 0, f"trainer.{key}", getattr(self, key), "an integer >= 0")
        check(
            self.eval_batch_size is None or self.eval_batch_size > 0,
            "trainer.eval_batch_size",
            self.eval_batch_size,
            "a positive integer or null",
        )
        check(self.grad_clip >= 0, "trainer.grad_clip", self.grad_clip, "a float >= 0 (0 = off)")
        check(
            self.peak_flops is None or self.peak_flops > 0,
            "trainer.peak_flops",
            self.peak_flops,
            "a positive float (FLOP/s) or null",
        )
        one_of("trainer.mixed_precision", self.mixed_precision, ("no", "fp16", "bf16"))


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN/inf; the run stopped, checkpoints of that step on are quarantined
    (``nonfinite-step_*``) and the message names the last good one."""


def per_device_batch_size(global_batch: int, num_processes: int, grad_accum: int) -> int:
    """Split the global batch over processes and accumulation steps; it must divide evenly."""
    denom = num_processes * grad_accum
    if global_batch <= 0 or global_batch % denom != 0:
        raise ValueError(
            f"trainer.batch_size={global_batch} (global batch per optimizer step) must be a positive multiple of "
            f"processes ({num_processes}) x trainer.grad_accum_steps ({grad_accum})"
        )
    return global_batch // denom


def output_dir_from_cfg(cfg: DictConfig) -> Path:
    """``paths.output_dir`` (inside a Hydra app this is the job's output dir)."""
    try:
        out = cfg.paths.output_dir
    except Exception as e:  # interpolation to hydra:runtime outside a Hydra app
        raise ValueError(
            "paths.output_dir cannot be resolved (outside a Hydra app, set paths.output_dir=/some/dir)"
        ) from e
    if not out:
        raise ValueError("paths.output_dir is empty; set it to the run directory")
    return Path(str(out))


def dynamo_plugin(cfg: DictConfig, num_processes: int = 1) -> Any:
    """trainer.compile -> Accelerate's TorchDynamoPlugin, or None when compilation is off.

    The model is one graph only with static shapes: ``model.sparse_predictions`` (logits only at masked
    positions) has data-dependent shapes, so it breaks the graph, and CUDA graphs re-record per shape.
    With several processes Accelerate compiles the DDP wrapper, whose own forward has an untraceable call
    (``DistributedDataParallel._pre_forward`` logging): fullgraph is then checked on the model's frame only.
    """
    from accelerate.utils import TorchDynamoPlugin

    ccfg = cfg.trainer.get("compile")
    if not ccfg or not ccfg.get("enabled", False):
        return None
    grad_accum_steps = int(cfg.trainer.grad_accum_steps)
    mode, fullgraph = str(ccfg.get("mode", "default")), bool(ccfg.get("fullgraph", False))
    if mode == "reduce-overhead" and grad_accum_steps > 1:
        # CUDA-graph trees hand the first micro-batch's gradient buffer to .grad, and later replays overwrite it
        # (pytorch/pytorch#169545, #96693): accumulated gradients would be silently wrong.
        raise ValueError(
            "trainer.compile.mode=reduce-overhead (CUDA graphs) cannot be combined with "
            f"trainer.grad_accum_steps={grad_accum_steps}: use mode=default, or a larger per-GPU batch"
        )
    sparse = bool((cfg.get("model") or {}).get("sparse_predictions", False))
    if sparse and fullgraph:
        raise ValueError(
            "trainer.compile.fullgraph=true needs model.sparse_predictions=false (the sparse "
            "MLM / feature gathers have data-dependent shapes, which break the graph)"
        )
    if sparse and mode == "reduce-overhead":
        log.warning(
            "trainer.compile.mode=reduce-overhead with model.sparse_predictions=true: the masked-position "
            "gathers break the graph; set model.sparse_predictions=false for one CUDA graph per step"
        )
    if mode == "reduce-overhead" and not (cfg.get("data") or {}).get("pad_to_max_length", False):
        log.warning(
            "trainer.compile.mode=reduce-overhead without data.pad_to_max_length=true: every new text "
            "length compiles and records another CUDA graph"
        )
    if fullgraph and num_processes > 1:
        # dynamo still traces the model's forward as its own frame (split only at DDP's gradient buckets, so the
        # all-reduce overlaps the backward); the break is in DDP's wrapper, before the model is called
        log.info(
            "trainer.compile.fullgraph=true is not enforced with %d processes: DDP's forward wrapper is not "
            "traceable (the model itself is checked in single-process runs)",
            num_processes,
        )
        fullgraph = False
    return TorchDynamoPlugin(backend=str(ccfg.get("backend", "inductor")), mode=mode, fullgraph=fullgraph)


def make_accelerator(cfg: DictConfig) -> tuple[Any, Path]:
    """Build the Accelerator; the run dir is decided on the main process and shared with the others."""
    from accelerate import Accelerator, PartialState
    from accelerate.state import AcceleratorState
    from accelerate.utils import DistributedDataParallelKwargs, broadcast_object_list, set_seed

    tcfg = cfg.trainer
    # Sequential runs in one process (sweeps, tests) may change mixed precision / accumulation:
    # Accelerate keeps those in a process-wide singleton, which is cleared here (not the process group).
    AcceleratorState._reset_state(reset_partial_state=False)
    cpu = use_cpu(tcfg.get("cpu", False))
    state = PartialState(cpu=cpu)
    chosen = [str(output_dir_from_cfg(cfg).resolve()) if state.is_main_process else None]
    if state.num_processes > 1:
        broadcast_object_list(chosen, from_process=0)
    run_dir = Path(chosen[0])
    trackers = tracker_names(cfg.get("logger"))
    acc = Accelerator(
        cpu=cpu,
        mixed_precision=str(tcfg.mixed_precision),
        # torch.compile through Accelerate; unwrap_model(keep_torch_compile=False) gives the plain module to save
        dynamo_plugin=dynamo_plugin(cfg, state.num_processes),
        gradient_accumulation_steps=int(tcfg.grad_accum_steps),
        log_with=trackers or None,
        project_dir=str(run_dir),
        # LXMERT leaves parameters unused in some setups (the VQA model skips the last cross layer's
        # vision branch; pretraining tasks can be switched off), which plain DDP rejects.
        kwargs_handlers=[
            DistributedDataParallelKwargs(find_unused_parameters=bool(tcfg.get("ddp_find_unused_parameters", True)))
        ],
    )
    set_seed(int(tcfg.seed))
    if acc.is_main_process:
        run_dir.mkdir(parents=True, exist_ok=True)
    acc.wait_for_everyone()
    return acc, run_dir


def make_loader(
    dataset: Dataset,
    collate_fn: Callable | None,
    batch_size: int,
    *,
    shuffle: bool,
    seed: int,
    num_workers: int = 0,
    drop_last: bool = False,
    lengths: np.ndarray | None = None,
    window_batches: int = 50,
) -> tuple[DataLoader, EpochShuffleSampler | LengthBucketBatchSampler]:
    """A DataLoader over a seeded (seed, epoch) order; its own generator, so creating an iterator never
    consumes the global RNG (which resume restores exactly). With ``lengths`` (one per example) the batches
    group examples of similar length (``LengthBucketBatchSampler``): less padding, same examples per epoch.
    Returns the loader and the object whose ``set_epoch`` fixes the order."""
    g = torch.Generator()
    g.manual_seed(seed)
    common = dict(collate_fn=collate_fn, num_workers=num_workers, generator=g, pin_memory=torch.cuda.is_available())
    if lengths is not None:
        if len(lengths) != len(dataset):
            raise ValueError(f"length bucketing: {len(lengths)} lengths for {len(dataset)} examples")
        batches = LengthBucketBatchSampler(
            lengths, batch_size, window_batches=window_batches, shuffle=shuffle, drop_last=drop_last, seed=seed
        )
        return DataLoader(dataset, batch_sampler=batches, **common), batches
    sampler = EpochShuffleSampler(len(dataset), seed=seed, shuffle=shuffle)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, **common), sampler


def _batch_size_of(batch: Any) -> int:
    bs = getattr(batch, "batch_size", None)
    if isinstance(bs, int):
        return bs
    if isinstance(batch, Mapping):
        batch = next(iter(batch.values()))
    if isinstance(batch, (tuple, list)):
        batch = batch[0]
    return int(batch.shape[0])


def _batch_tokens(batch: Any) -> dict[str, torch.Tensor]:
    """Real text tokens and boxes of a batch, as device sums (no host read); empty for batches without masks."""
    out = {}
    for key, name in (("tokens", "attention_mask"), ("boxes", "visual_mask")):
        mask = getattr(batch, name, None)
        if isinstance(mask, torch.Tensor):
            out[key] = mask.sum()
    return out


def _log_field(key: str, value: Any) -> str:
    """One ``key=value`` of the log line, numbers in a readable precision."""
    if not isinstance(value, float):
        return f"{key}={value}"
    return f"{key}={value:.4g}" if key not in ("model_flops_per_s",) else f"{key}={value:.3e}"


@dataclass
class _Running:
    """What a log step reports, summed on the device since the last one: the loss and its parts, the
    micro-batch count, the non-finite count and the first bad step and loss value (-1 / 0 while none), and
    the step of the first micro-batch since the last log (where a bad step seen on another process may be)."""

    sums: dict[str, Any]
    n: int = 0
    first_step: int = 0
    bad: torch.Tensor | None = None
    first_bad_step: torch.Tensor | None = None
    first_bad_loss: torch.Tensor | None = None


@dataclass
class _Run:
    """The objects of one ``fit``: prepared model / optimizer / loader, schedule and step counts."""

    model: torch.nn.Module
    optimizer: Any
    loader: Any
    sampler: Any
    scheduler: Any
    total_steps: int
    max_epochs: int
    global_bs: int


@dataclass
class FitResult:
    metrics: dict[str, float]
    state: TrainerState
    run_dir: Path


class Trainer:
    """Owns the accelerator and run directory; ``fit`` runs the loop. Build the model AFTER creating
    the Trainer: it seeds every RNG from ``trainer.seed`` first, so model init is reproducible."""

    def __init__(self, cfg: DictConfig, callbacks: list[Callback] | tuple[Callback, ...] = ()) -> None:
        self.cfg = cfg
        self.tcfg = cfg.trainer
        self.accelerator, self.run_dir = make_accelerator(cfg)
        self.callbacks = list(callbacks)
        self.logger = MetricsLogger(self.accelerator, self.run_dir)
        self.config_record = OmegaConf.to_container(cfg, resolve=True)
        self.ckpt = CheckpointManager(self.accelerator, self.run_dir, keep_last_k=self.tcfg.get("keep_last_k", 2))
        self.resume_from = resolve_resume(self.tcfg.get("resume"), self.run_dir)
        if self.resume_from is None and list_checkpoints(self.run_dir):  # refused before config.yaml is rewritten
            raise FileExistsError(
                f"{self.run_dir} already holds checkpoints of an earlier run; continue it with trainer.resume=auto, "
                f"or start a new run with another run_name / paths.output_dir"
            )
        self._write_config()
        trackers = tracker_names(cfg.get("logger"))
        if trackers:
            init_kwargs = tracker_init_kwargs(cfg.get("logger"), self.run_dir, self.run_dir.name)
            if "wandb" in init_kwargs:  # wandb also reads the environment: make it agree with the config
                os.environ["WANDB_MODE"] = init_kwargs["wandb"]["mode"]
            self.accelerator.init_trackers(
                project_name=str(cfg.get("logger", {}).get("project", "lxmert-repro")),
                config=flatten(self.config_record),
                init_kwargs=init_kwargs,
            )

    # ------------------------------------------------------------------ helpers
    @property
    def is_main(self) -> bool:
        return bool(self.accelerator.is_main_process)

    def _write_config(self) -> None:
        if self.is_main:
            atomic_write_text(self.run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.create(self.config_record)))

    def record_model(self, model: torch.nn.Module) -> None:
        """Record the model actually trained in config.yaml and the checkpoints' config, in place of the
        ``model`` group: with ``finetune.init_from`` it is the loaded model's config (with the dropout-type fields
        the user set: training/models.py), and the data decides the vocabulary and feature sizes. Call after building the model, before ``fit``."""
        config = getattr(model, "config", None)
        if not hasattr(config, "to_dict"):
            return
        group = self.config_record.get("model") or {}
        target = group.get("_target_") or f"{type(config).__module__}.{type(config).__qualname__}"
        self.config_record["model"] = {"_target_": target, **config.to_dict()}
        self._write_config()

    def per_device_batch_size(self) -> int:
        return per_device_batch_size(
            int(self.tcfg.batch_size), self.accelerator.num_processes, int(self.tcfg.grad_accum_steps)
        )

    def eval_loader(self, dataset: Dataset, collate_fn: Callable | None, batch_size: int | None = None) -> DataLoader:
        """A prepared, unshuffled loader for evaluation (use ``accelerator.gather_for_metrics`` on outputs)."""
        bs = batch_size or int(self.tcfg.get("eval_batch_size") or self.per_device_batch_size())
        loader, _ = make_loader(
            dataset, collate_fn, bs, shuffle=False, seed=int(self.tcfg.seed), num_workers=int(self.tcfg.num_workers)
        )
        return self.accelerator.prepare(loader)

    def _track(self, running: _Running, loss: torch.Tensor, parts: Mapping[str, Any], state: TrainerState) -> None:
        """Add one micro-batch's loss and parts to the device sums; note a non-finite loss, without a host read."""
        loss = loss.detach().float()
        dev = loss.device
        if running.n == 0:
            running.first_step = state.global_step
        if running.bad is None:
            running.bad = torch.zeros((), dtype=torch.int64, device=dev)
            running.first_bad_step = torch.full((), -1, dtype=torch.int64, device=dev)
            running.first_bad_loss = torch.zeros((), dtype=torch.float32, device=dev)
        bad = ~torch.isfinite(loss)
        first = bad & (running.bad == 0)
        running.first_bad_step = torch.where(
            first, torch.full_like(running.first_bad_step, state.global_step), running.first_bad_step
        )
        running.first_bad_loss = torch.where(first, loss, running.first_bad_loss)
        running.bad = running.bad + bad.long()
        for k, v in {"loss": loss, **parts}.items():
            v = v.detach().to(dev, torch.float64) if isinstance(v, torch.Tensor) else float(v)
            running.sums[k] = running.sums.get(k, 0.0) + v
        running.n += 1

    def _stop_if_nonfinite(self, running: _Running, state: TrainerState) -> None:
        """Read the non-finite count (one host read, all processes); raise ``NonFiniteLossError`` if any.

        Called at every log step and before anything is saved or evaluated, so no checkpoint holds weights
        updated from a non-finite loss."""
        if running.bad is None:
            return
        bad = running.bad.reshape(1)
        if self.accelerator.num_processes > 1:
            bad = self.accelerator.reduce(bad, reduction="sum")
        if int(bad.item()) == 0:
            # every loss so far came from finite weights: the checkpoints up to the last step's are good
            self.ckpt.confirm(state.global_step - 1)
            return
        first_step = int(running.first_bad_step.item())
        # the weights of the first bad step (or, when another process saw it, of any step since the last check)
        # gave the non-finite loss: checkpoints of that step on are not good
        good = self.ckpt.quarantine_from(first_step if first_step >= 0 else running.first_step)
        where = (
            f"at optimizer step {first_step}, detected at step {state.global_step}"
            if first_step >= 0
            else f"on another process, detected at step {state.global_step}"
        )
        parts = {k: float(v) / max(running.n, 1) for k, v in running.sums.items() if k != "loss"}
        msg = (
            f"non-finite training loss ({float(running.first_bad_loss.item())}) {where} (epoch {state.epoch}, "
            f"batch {state.batch_in_epoch}); per-task means since the last log: {parts}. Training stopped; "
            f"nothing after the last log was saved. {good_checkpoint_sentence(good)} Try a lower optim.lr, "
            f"trainer.grad_clip, or trainer.mixed_precision=no."
        )
        self.logger.log({"event": "nonfinite_loss", "message": msg}, step=state.global_step)
        self.accelerator.end_training()
        raise NonFiniteLossError(msg)

    # ------------------------------------------------------------------ the loop, in pieces
    def _setup(self, model: torch.nn.Module, train_dataset: Dataset, collate_fn: Callable | None) -> _Run:
        """Loader, optimizer and schedule from config, prepared by the accelerator."""
        acc, tcfg, cfg = self.accelerator, self.tcfg, self.cfg
        per_dev = self.per_device_batch_size()
        lengths = None
        if tcfg.get("length_bucketing", False):
            if not hasattr(train_dataset, "text_lengths"):
                raise ValueError(f"trainer.length_bucketing=true: {type(train_dataset).__name__} has no text_lengths()")
            lengths = train_dataset.text_lengths()
        loader, sampler = make_loader(
            train_dataset,
            collate_fn,
            per_dev,
            shuffle=bool(tcfg.get("shuffle", True)),
            seed=int(tcfg.seed),
            num_workers=int(tcfg.num_workers),
            drop_last=bool(tcfg.get("drop_last", True)),
            lengths=lengths,
            window_batches=int(tcfg.get("bucket_window_batches", 50)),
        )
        if len(loader) == 0:
            raise ValueError(
                f"training set of {len(train_dataset)} examples gives no batch of {per_dev} per process "
                f"(drop_last); lower trainer.batch_size"
            )
        optim_cfg = cfg.optim
        groups = param_groups(model, float(optim_cfg.weight_decay), bool(optim_cfg.no_decay_groups))
        optimizer = instantiate(optim_cfg.optimizer)(groups)
        model, optimizer, loader = acc.prepare(model, optimizer, loader)
        self.model, self.optimizer = model, optimizer  # visible to callbacks
        steps_per_epoch = math.ceil(len(loader) / int(tcfg.grad_accum_steps))
        max_epochs = int(tcfg.max_epochs)
        max_steps = int(tcfg.get("max_steps") or -1)
        total_steps = max_steps if max_steps > 0 else steps_per_epoch * max_epochs
        if max_steps > 0:
            max_epochs = max(max_epochs, math.ceil(max_steps / steps_per_epoch))
        scheduler = instantiate(optim_cfg.scheduler)(optimizer.optimizer, total_steps=total_steps)
        acc.register_for_checkpointing(scheduler)
        return _Run(model, optimizer, loader, sampler, scheduler, total_steps, max_epochs, per_dev * acc.num_processes)

    def _resume(self) -> TrainerState:
        """The state to start from: ``trainer.resume``'s checkpoint, or a fresh one in an empty run dir."""
        ckpt = self.resume_from  # resolved (and a used run dir refused) in __init__, before config.yaml is written
        if ckpt is None:
            return TrainerState()
        state = self.ckpt.load(ckpt)
        log.info(
            "resumed from %s (step %d, epoch %d, batch %d)", ckpt, state.global_step, state.epoch, state.batch_in_epoch
        )
        self.logger.log({"event": "resume", "checkpoint": str(ckpt)}, step=state.global_step)
        return state

    def _train_step(
        self, run: _Run, batch: Any, loss_fn: LossFn, state: TrainerState
    ) -> tuple[torch.Tensor, Mapping[str, Any], torch.Tensor | None]:
        """Forward, backward, clip and optimizer step of one micro-batch; nothing is read back to the host."""
        acc = self.accelerator
        clip = float(self.tcfg.get("grad_clip") or 0.0)
        # a new iteration for CUDA graphs (trainer.compile.mode=reduce-overhead): the previous step's graph
        # outputs may be overwritten from here on; a no-op otherwise
        torch.compiler.cudagraph_mark_step_begin()
        with acc.accumulate(run.model):
            loss, parts = loss_fn(run.model, batch, state)
            acc.backward(loss)
            grad_norm = None
            if acc.sync_gradients and clip > 0:
                grad_norm = acc.clip_grad_norm_(run.model.parameters(), clip)
            run.optimizer.step()
            run.optimizer.zero_grad(set_to_none=True)
        return loss, parts, grad_norm

    def _log_train(
        self,
        running: _Running,
        meter: ThroughputMeter,
        state: TrainerState,
        epoch_progress: float,
        lr: float,
        grad_norm: torch.Tensor | None,
        seconds: float,
    ) -> dict[str, float]:
        """The log step: one host read of the sums since the last log, averaged over micro-batches and processes."""
        keys = sorted(running.sums)
        work = sorted(meter.work)
        dev = self.accelerator.device
        values = torch.stack(
            [
                torch.as_tensor(v, dtype=torch.float64, device=dev)
                for v in [running.sums[k] for k in keys] + [meter.work[k] for k in work]
            ]
        )
        if self.accelerator.num_processes > 1:
            n = self.accelerator.num_processes
            values = self.accelerator.reduce(values, reduction="sum")
            values[: len(keys)] /= n  # losses: the mean over processes; work: the sum
        host = values.tolist()
        train = {f"train/{k}": v / running.n for k, v in zip(keys, host)}
        totals = dict(zip(work, host[len(keys) :]))
        samples = meter.samples * self.accelerator.num_processes
        rec: dict[str, float] = {
            **train,
            "lr": lr,
            "epoch": epoch_progress,
            **ThroughputMeter.rates(samples, totals, seconds, self.accelerator.num_processes, meter.peak_flops),
        }
        if grad_norm is not None:
            rec["grad_norm"] = float(grad_norm)
        self.logger.log(rec, step=state.global_step)
        if self.is_main:
            log.info("step %d: %s", state.global_step, "  ".join(_log_field(k, v) for k, v in rec.items()))
        return train

    def _evaluate(
        self,
        model: torch.nn.Module,
        eval_fn: EvalFn,
        state: TrainerState,
        select_metric: str | None,
        select_mode: str,
        save_model_fn: Callable[[torch.nn.Module, Path], None] | None,
    ) -> dict[str, float]:
        """Run ``eval_fn``, log it, and keep the best model by ``select_metric``."""
        acc = self.accelerator
        model.eval()
        with torch.no_grad():
            metrics = eval_fn(model, state)
        model.train()
        self.logger.log({**metrics, "epoch": state.epoch}, step=state.global_step)
        if select_metric is None:
            return metrics
        if select_metric not in metrics:
            raise KeyError(f"selection metric {select_metric!r} not among eval metrics {sorted(metrics)}")
        val = float(metrics[select_metric])
        better = state.best_metric is None or (
            val < state.best_metric if select_mode == "min" else val > state.best_metric
        )
        if better:
            state.best_metric, state.best_step = val, state.global_step
            if save_model_fn is not None and acc.is_main_process:
                save_model_fn(acc.unwrap_model(model, keep_torch_compile=False), self.run_dir / "model_best")
            self.logger.log({"event": "best", select_metric: val}, step=state.global_step)
        acc.wait_for_everyone()
        return metrics

    def _checkpoint(self, running: _Running, state: TrainerState) -> None:
        """Save a resumable checkpoint, after making sure no non-finite loss went into the weights."""
        self._stop_if_nonfinite(running, state)
        self.ckpt.save(state, self.config_record)

    def _start_epoch(self, run: _Run, train_dataset: Dataset, state: TrainerState) -> Any:
        """Fix the epoch's order everywhere; the loader for the rest of the epoch (skipping what a resume did)."""
        epoch, acc, loader = state.epoch, self.accelerator, run.loader
        run.sampler.set_epoch(epoch)
        if hasattr(train_dataset, "set_epoch"):
            train_dataset.set_epoch(epoch)
        epoch_loader = acc.skip_first_batches(loader, state.batch_in_epoch) if state.batch_in_epoch else loader
        # Accelerate's loader re-sets the sampler's epoch from its own iteration counter on __iter__;
        # pin that counter to the real epoch (a fresh skip-loader would otherwise restart at 0).
        for dl in {id(loader): loader, id(epoch_loader): epoch_loader}.values():
            if hasattr(dl, "set_epoch"):
                dl.set_epoch(epoch)
        return epoch_loader

    def fit(
        self,
        model: torch.nn.Module,
        train_dataset: Dataset,
        collate_fn: Callable | None,
        loss_fn: LossFn,
        eval_fn: EvalFn | None = None,
        *,
        select_metric: str | None = None,
        select_mode: str = "min",
        save_model_fn: Callable[[torch.nn.Module, Path], None] | None = None,
        flops_fn: FlopsFn | None = None,
    ) -> FitResult:
        """Train until ``trainer.max_steps`` / ``max_epochs``; evaluate, checkpoint and log on the way.

        Between log steps (``trainer.log_every_n_steps``) nothing is read back to the host: losses, the
        non-finite check and the throughput counts are summed on the device and read once per log step (and
        before each checkpoint or evaluation), so a non-finite loss stops the run there, with the last good
        checkpoint kept. ``flops_fn(batch)`` (forward FLOPs) adds model FLOP/s and MFU to the logs."""
        acc, tcfg = self.accelerator, self.tcfg
        if select_mode not in ("min", "max"):
            raise ValueError(f"select_mode must be 'min' or 'max', got {select_mode!r}")
        run = self._setup(model, train_dataset, collate_fn)
        model = run.model
        state = self._resume()
        log_every = int(tcfg.get("log_every_n_steps") or 50)
        ckpt_every = int(tcfg.get("checkpoint_every_n_steps") or 0)
        every = int(tcfg.get("eval_every_n_epochs") or 1)
        meter = ThroughputMeter(device_peak_flops(acc.device, tcfg.get("peak_flops")))
        last_eval: dict[str, float] = {}
        last_train: dict[str, float] = {}
        running = _Running(sums={})
        model.train()
        stop = state.global_step >= run.total_steps

        while state.epoch < run.max_epochs and not stop:
            epoch = state.epoch
            epoch_loader = self._start_epoch(run, train_dataset, state)
            pbar = None
            if acc.is_local_main_process and tcfg.get("progress_bar", True):
                from tqdm.auto import tqdm

                pbar = tqdm(
                    total=len(run.loader) * run.global_bs,
                    initial=state.batch_in_epoch * run.global_bs,
                    desc=f"epoch {epoch + 1}/{run.max_epochs}",
                    unit="sample",
                    unit_scale=True,
                    dynamic_ncols=True,
                )
            t_last = time.time()
            for batch in epoch_loader:
                loss, parts, grad_norm = self._train_step(run, batch, loss_fn, state)
                self._track(running, loss, parts, state)
                work = _batch_tokens(batch)
                if flops_fn is not None:
                    work["flops"] = flops_fn(batch) * TRAIN_FLOPS_PER_FORWARD
                meter.add(_batch_size_of(batch), **work)
                state.batch_in_epoch += 1
                if pbar is not None:
                    pbar.update(run.global_bs)
                if not acc.sync_gradients:
                    continue
                if not acc.optimizer_step_was_skipped:
                    run.scheduler.step()
                state.global_step += 1
                if state.global_step % log_every == 0 or state.global_step == run.total_steps:
                    self._stop_if_nonfinite(running, state)
                    now = time.time()
                    last_train = self._log_train(
                        running,
                        meter,
                        state,
                        epoch + state.batch_in_epoch / len(run.loader),
                        run.scheduler.get_last_lr()[0],
                        grad_norm,
                        now - t_last,
                    )
                    if pbar is not None:
                        pbar.set_postfix(
                            loss=f"{last_train['train/loss']:.4f}", lr=f"{run.scheduler.get_last_lr()[0]:.2e}"
                        )
                    running, t_last = _Running(sums={}), now
                    meter.reset()
                for cb in self.callbacks:
                    cb(self, state)
                if ckpt_every > 0 and state.global_step % ckpt_every == 0:
                    self._checkpoint(running, state)
                if state.global_step >= run.total_steps:
                    stop = True
                    break
            if pbar is not None:
                pbar.close()
            epoch_done = state.batch_in_epoch >= len(run.loader)
            if epoch_done:
                state.epoch += 1
                state.batch_in_epoch = 0
            if eval_fn is not None and (
                epoch_done and (state.epoch % every == 0 or state.epoch >= run.max_epochs) or stop
            ):
                self._stop_if_nonfinite(running, state)
                last_eval = self._evaluate(model, eval_fn, state, select_metric, select_mode, save_model_fn)
            self._checkpoint(running, state)

        if eval_fn is not None and not last_eval:  # resumed a finished run: report its metrics again
            model.eval()
            with torch.no_grad():
                last_eval = eval_fn(model, state)
            model.train()
        self._stop_if_nonfinite(running, state)
        self.ckpt.finish()
        if save_model_fn is not None and acc.is_main_process:
            save_model_fn(acc.unwrap_model(model, keep_torch_compile=False), self.run_dir / "model_last")
        acc.wait_for_everyone()
        metrics: dict[str, float] = {**last_train, **last_eval}
        if select_metric is not None and state.best_metric is not None:
            metrics[f"best/{select_metric}"] = state.best_metric
        metrics["global_step"] = state.global_step
        if acc.is_main_process:
            atomic_write_json(self.run_dir / "final_metrics.json", metrics)
        self.model = model
        return FitResult(metrics=metrics, state=state, run_dir=self.run_dir)

    def end(self) -> None:
        """Close trackers; call once after ``fit``."""
        self.accelerator.end_training()
