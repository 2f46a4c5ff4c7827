"""Training loop on the real tiny model and real (small) easy-VQA data, CPU.

Pretraining loss falls; fine-tuning beats the majority answer; a run killed mid-epoch and resumed
ends with exactly the weights of an uninterrupted run; bad input stops with clear errors.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_helpers import TINY_TRAINER, build_easy_vqa_data, compose, data_overrides

torch.set_num_threads(1)  # tests share 2 cores with others; tiny models gain nothing from threads


@pytest.fixture(scope="module")
def easy(tmp_path_factory) -> dict[str, str]:
    return build_easy_vqa_data(tmp_path_factory.mktemp("easy_vqa"), n_train_images=120, n_test_images=40)


def _cfg(easy, task: str, out: Path, *extra: str):
    name = "pretrain" if task == "pretrain" else "finetune"
    return compose(name, TINY_TRAINER + data_overrides(easy, task) + [f"paths.output_dir={out}", *extra])


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def test_pretraining_loss_falls(easy, tmp_path):
    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    out = tmp_path / "pre"
    metrics = train_pretrain(
        _cfg(
            easy,
            "pretrain",
            out,
            "trainer.batch_size=32",
            "trainer.max_steps=40",
            "optim.lr=1e-3",
            "optim.warmup_ratio=0.1",
            "data.pretrain.val=null",
        )
    )
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert len(rows) == 40
    first = sum(r["train/loss"] for r in rows[:5]) / 5
    last = sum(r["train/loss"] for r in rows[-5:]) / 5
    assert last < 0.8 * first, (first, last)
    for task in ("mlm", "itm", "obj", "attr", "feat", "qa"):  # every task logged
        assert f"train/{task}" in rows[-1]
    assert metrics["global_step"] == 40
    assert (out / "model_last" / "answers.json").is_file() and (out / "model_last" / "tokenizer").is_dir()
    assert (out / "checkpoints").is_dir() and (out / "config.yaml").is_file()


def test_pretrain_qa_schedule_and_val_losses(easy, tmp_path):
    """Paper schedule: no QA loss before qa_start_epoch; validation loss per task each epoch."""
    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    out = tmp_path / "qa"
    train_pretrain(
        _cfg(
            easy,
            "pretrain",
            out,
            "trainer.batch_size=64",
            "trainer.max_epochs=2",
            "pretrain.qa_start_epoch=1",
            "data.limit=192",
        )
    )
    rows = read_metrics(out)
    train = [r for r in rows if "train/loss" in r]
    epoch1 = [r for r in train if r["epoch"] <= 1.0]
    epoch2 = [r for r in train if r["epoch"] > 1.0]
    assert epoch1 and epoch2
    assert all(r.get("train/qa", 0.0) == 0.0 for r in epoch1)  # QA off in the first epoch
    assert all(r["train/qa"] > 0.0 for r in epoch2)
    vals = [r for r in rows if "val/loss" in r and "epoch" in r]
    assert len(vals) == 2 and all("val/mlm" in r and "val/itm" in r and "val/qa" in r for r in vals)
    assert any(r.get("event") == "best" for r in rows) and (out / "model_best").is_dir()


def test_finetune_beats_majority_and_writes_predictions(easy, tmp_path):
    from lxmert_repro.evaluation.predictions import read_predictions
    from lxmert_repro.training.finetune import train_vqa

    out = tmp_path / "ft"
    metrics = train_vqa(_cfg(easy, "vqa", out, "trainer.batch_size=16", "trainer.max_epochs=6", "optim.lr=1e-3"))
    import datasets

    test = datasets.load_from_disk(easy["test"])
    majority = Counter(test["main_answer"]).most_common(1)[0][1] / len(test) * 100
    assert metrics["best/val/accuracy"] > majority + 5, (metrics, majority)
    preds = read_predictions(out / "predictions_test.json")
    assert len(preds) == len(test) and set(preds) == set(test["question_id"])
    assert (out / "model_best" / "model.safetensors").is_file()
    acc = sum(preds[q] == a for q, a in zip(test["question_id"], test["main_answer"])) / len(test) * 100
    assert acc == pytest.approx(metrics["test/accuracy"], abs=0.005)  # reported to 2 decimals
    for atype in set(test["answer_type"]):  # per answer type, from the split's own labels
        rows = [(q, a) for q, a, t in zip(test["question_id"], test["main_answer"], test["answer_type"]) if t == atype]
        want = sum(preds[q] == a for q, a in rows) / len(rows) * 100
        assert metrics[f"test/accuracy_{atype.replace('/', '_')}"] == pytest.approx(want, abs=0.01)


def test_finetune_from_pretraining_maps_answer_head(easy, tmp_path):
    from lxmert_repro.training.data_setup import build_vqa_data
    from lxmert_repro.training.models import build_vqa_model
    from lxmert_repro.training.pretrain import train_pretrain

    pre = tmp_path / "pre"
    train_pretrain(
        _cfg(easy, "pretrain", pre, "trainer.batch_size=64", "trainer.max_steps=2", "data.pretrain.val=null")
    )
    cfg = _cfg(easy, "vqa", tmp_path / "ft", f"finetune.init_from={pre / 'model_last'}")
    data = build_vqa_data(cfg)
    model = build_vqa_model(cfg, data)
    src = _weights(pre / "model_last")
    pre_answers = json.loads((pre / "model_last" / "answers.json").read_text())["answers"]
    for j, a in enumerate(data.answers.answers):  # same answer list here: rows copied one-to-one
        i = pre_answers.index(a)
        assert torch.equal(model.answer_head.classifier.weight[j], src["answer_head.classifier.weight"][i])
    assert torch.equal(model.lxmert.embeddings.word_embeddings.weight, src["lxmert.embeddings.word_embeddings.weight"])


def test_run_config_records_the_model_loaded_from_init_from(easy, tmp_path):
    """finetune.init_from replaces the model group: config.yaml (and the checkpoints' record) must say what was
    trained, here a 2-layer 32-wide model with the data's vocabulary, not the group's (lxmert_small: 128 wide,
    3 cross layers). The group's own values are not the user's: they are neither applied nor refused."""
    import yaml

    from lxmert_repro.training.checkpointing import find_checkpoint, read_trainer_state
    from lxmert_repro.training.finetune import train_vqa
    from lxmert_repro.training.pretrain import train_pretrain

    pre = tmp_path / "pre"
    train_pretrain(
        _cfg(easy, "pretrain", pre, "trainer.batch_size=64", "trainer.max_steps=1", "data.pretrain.val=null")
    )
    loaded = json.loads((pre / "model_last" / "model_config.json").read_text())["config"]
    out = tmp_path / "ft"
    overrides = [o for o in TINY_TRAINER if not o.startswith("model=")] + data_overrides(easy, "vqa")
    train_vqa(
        compose(
            "finetune",
            overrides
            + [
                f"paths.output_dir={out}",
                "model=lxmert_small",
                f"finetune.init_from={pre / 'model_last'}",
                "trainer.batch_size=64",
                "trainer.max_steps=1",
                "data.vqa.test=null",
                "data.vqa.val=null",
            ],
        )
    )
    recorded = yaml.safe_load((out / "config.yaml").read_text())["model"]
    assert (recorded["hidden_size"], recorded["x_layers"], recorded["vocab_size"]) == (32, 2, loaded["vocab_size"])
    assert {k: recorded[k] for k in loaded} == loaded
    assert read_trainer_state(find_checkpoint(out))[1]["config"]["model"] == recorded


def _hydra_composed(*overrides: str):
    """(config, its Hydra node) as the app composes them: what user_model_changes reads from a running app."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from training_helpers import CONFIG_DIR

    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="finetune", overrides=list(overrides), return_hydra_config=True)
    from omegaconf import open_dict

    hydra = cfg.hydra
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg, hydra


def test_user_model_changes_are_the_command_line_and_the_experiment_not_the_group():
    """experiment=easy_vqa_vqa picks model group lxmert_small and sets both dropouts to 0.0 in its model: block;
    the command line sets hidden_dropout_prob=0.1 (the group's value, but given: it counts) and nothing else.
    The group's own sizes are not changes. Outside a Hydra app (no Hydra node) nothing is known: None."""
    from lxmert_repro.training.models import user_model_changes

    cfg, hydra = _hydra_composed("experiment=easy_vqa_vqa", "model.hidden_dropout_prob=0.1")
    assert hydra.runtime.choices.model == "lxmert_small"
    assert user_model_changes(cfg, hydra) == {"hidden_dropout_prob": 0.1, "attention_probs_dropout_prob": 0.0}
    cfg, hydra = _hydra_composed("model=lxmert_tiny", "+model.extra.note=x")
    assert user_model_changes(cfg, hydra) == {"extra": {"note": "x"}}
    cfg, hydra = _hydra_composed()
    assert user_model_changes(cfg, hydra) == {}
    assert user_model_changes(cfg) is None  # not in a Hydra app: HydraConfig is not set


def test_apply_model_changes_sets_run_fields_and_refuses_other_values():
    from model_helpers import model_config

    from lxmert_repro.training.models import apply_model_changes

    tiny = model_config("lxmert_tiny")
    src = "finetune.init_from=/m"
    out = apply_model_changes(tiny, {"hidden_dropout_prob": 0.3, "hidden_size": 32, "sparse_predictions": False}, src)
    assert (out.hidden_dropout_prob, out.sparse_predictions, out.hidden_size) == (0.3, False, 32)
    assert out.replace(hidden_dropout_prob=0.1, sparse_predictions=True) == tiny  # nothing else moved
    assert apply_model_changes(tiny, {"l_layers": 2}, src) is tiny  # a size equal to the checkpoint's: no change
    with pytest.raises(ValueError) as e:
        apply_model_changes(tiny, {"hidden_size": 64, "attention_probs_dropout_prob": 0.0, "l_layers": 3}, src)
    msg = str(e.value)
    assert msg.startswith(src) and "model.hidden_size=64 differs from the checkpoint's hidden_size=32" in msg
    assert (
        "model.l_layers=3 differs from the checkpoint's l_layers=2" in msg
        and "attention_probs" not in msg.split("(")[0]
    )
    with pytest.raises(
        ValueError, match=r"the checkpoint's LxmertConfig has no field model.v_hidden_size \(requested 8\)"
    ):
        apply_model_changes(tiny, {"v_hidden_size": 8}, src)
    vil = model_config("vilbert_tiny")
    assert apply_model_changes(vil, {"v_hidden_dropout_prob": 0.0}, src).v_hidden_dropout_prob == 0.0
    with pytest.raises(ValueError, match=r"model.v_biattention_id=\[0, 0\] differs from the checkpoint's"):
        apply_model_changes(vil, {"v_biattention_id": [0, 0]}, src)


def test_nlvr2_one_sequence_from_the_run_turns_a_visualbert_encoder_but_not_a_pair_model(tmp_path):
    """model.nlvr2_one_sequence=true with finetune.init_from: a VisualBERT pretraining model then becomes the
    one-sequence NLVR2 model; a loaded pair NLVR2 model cannot become it (an error naming both classes)."""
    from model_helpers import model_config

    from lxmert_repro.modeling import build_model, save_model
    from lxmert_repro.training.models import load_with_run_changes

    cfg = model_config("visualbert_tiny")
    save_model(build_model(cfg, "pretraining"), tmp_path / "pre")
    save_model(build_model(cfg, "nlvr2"), tmp_path / "pair")
    pre = load_with_run_changes(tmp_path / "pre", {"nlvr2_one_sequence": True}, "finetune.init_from=pre")
    assert pre.config.nlvr2_one_sequence and pre.config.model_class("nlvr2").__name__ == "VisualBertForVisualReasoning"
    with pytest.raises(
        ValueError,
        match=r"pair: the checkpoint is a NLVR2Model; with model.nlvr2_one_sequence=True it "
        r"would be a VisualBertForVisualReasoning",
    ):
        load_with_run_changes(tmp_path / "pair", {"nlvr2_one_sequence": True}, "finetune.init_from=pair")


class _Kill(Exception):
    pass


def test_resume_mid_epoch_is_exact(easy, tmp_path):
    """Killed at step 7 (mid-epoch 2, last checkpoint at step 6), resumed with trainer.resume=auto:
    the final weights equal those of an uninterrupted run, bit for bit (dropout on)."""
    from lxmert_repro.training.pretrain import train_pretrain

    args = (
        "trainer.batch_size=32",
        "data.limit=160",
        "trainer.max_epochs=3",
        "trainer.checkpoint_every_n_steps=3",
        "data.pretrain.val=null",
        "optim.lr=1e-3",
    )
    train_pretrain(_cfg(easy, "pretrain", tmp_path / "a", *args))

    def kill(trainer, state):
        if state.global_step == 7:
            raise _Kill()

    with pytest.raises(_Kill):
        train_pretrain(_cfg(easy, "pretrain", tmp_path / "b", *args), callbacks=[kill])
    ckpts = sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir())
    assert ckpts == ["step_000000005", "step_000000006"]  # keep_last_k=2: epoch end 5, periodic 6; no tmp left
    m = train_pretrain(_cfg(easy, "pretrain", tmp_path / "b", *args, "trainer.resume=auto"))
    assert m["global_step"] == 15
    a, b = _weights(tmp_path / "a" / "model_last"), _weights(tmp_path / "b" / "model_last")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    resumed = [
        r
        for r in map(json.loads, (tmp_path / "b" / "metrics.jsonl").read_text().splitlines())
        if r.get("event") == "resume"
    ]
    assert resumed and resumed[0]["checkpoint"].endswith("step_000000006")


def test_nonfinite_loss_stops_and_keeps_last_good_checkpoint(easy, tmp_path):
    from lxmert_repro.training.loop import NonFiniteLossError
    from lxmert_repro.training.pretrain import train_pretrain

    def poison(trainer, state):
        if state.global_step == 4:
            with torch.no_grad():
                trainer.accelerator.unwrap_model(trainer.model).lxmert.pooler.dense.weight.fill_(float("nan"))

    out = tmp_path / "nan"
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss .* step 4.*step_000000003"):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                out,
                "trainer.batch_size=32",
                "trainer.max_steps=10",
                "trainer.checkpoint_every_n_steps=3",
                "data.pretrain.val=null",
            ),
            callbacks=[poison],
        )
    ckpt = out / "checkpoints" / "step_000000003"
    w = load_file(str(ckpt / "model.safetensors"))
    assert all(torch.isfinite(t).all() for t in w.values())
    assert not (out / "checkpoints" / "step_000000006").exists()
    assert "nonfinite_loss" in (out / "metrics.jsonl").read_text()


def test_nan_stop_names_a_checkpoint_that_resumes(easy, tmp_path):
    """lr 1e10: the weights of step 2 are finite (~3e10) but give a NaN loss. With keep_last_k=1 the stop
    must still name step 1 (kept as the newest good one), move step 2 aside, and step 1 must resume."""
    import re

    from lxmert_repro.training.loop import NonFiniteLossError
    from lxmert_repro.training.pretrain import train_pretrain

    args = (
        "trainer.batch_size=32",
        "data.pretrain.val=null",
        "optim.lr=1e10",
        "trainer.checkpoint_every_n_steps=1",
        "trainer.keep_last_k=1",
    )
    out = tmp_path / "lr1e10"
    with pytest.raises(NonFiniteLossError) as info:
        train_pretrain(_cfg(easy, "pretrain", out, *args, "trainer.max_steps=30"))
    named = re.search(r"Last good checkpoint: (\S+) \(resume with", str(info.value))
    assert named, str(info.value)
    good = Path(named.group(1))
    step = int(good.name.split("_")[1])
    assert all(torch.isfinite(t).all() for t in _weights(good).values())
    assert [p.name for p in (out / "checkpoints").iterdir() if p.name.startswith("nonfinite-")]  # the bad one, aside
    m = train_pretrain(
        _cfg(easy, "pretrain", tmp_path / "again", *args, f"trainer.max_steps={step + 1}", f"trainer.resume={good}")
    )
    assert m["global_step"] == step + 1 and m["train/loss"] == m["train/loss"]  # one more step, a finite loss


def test_nan_stop_says_when_no_good_checkpoint_exists(easy, tmp_path):
    from lxmert_repro.training.loop import NonFiniteLossError
    from lxmert_repro.training.pretrain import train_pretrain

    def poison(trainer, state):
        with torch.no_grad():
            trainer.accelerator.unwrap_model(trainer.model).lxmert.pooler.dense.weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLossError, match=r"step 1, .*No good checkpoint exists"):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                tmp_path / "none",
                "trainer.batch_size=32",
                "trainer.max_steps=5",
                "data.pretrain.val=null",
            ),
            callbacks=[poison],
        )


def test_checkpoint_of_nonfinite_weights_is_not_written(easy, tmp_path):
    from lxmert_repro.training.checkpointing import NonFiniteStateError
    from lxmert_repro.training.pretrain import train_pretrain

    def poison(trainer, state):
        if state.global_step == 3:
            with torch.no_grad():
                trainer.accelerator.unwrap_model(trainer.model).lxmert.pooler.dense.weight[0, 0] = float("inf")

    out = tmp_path / "inf"
    with pytest.raises(
        NonFiniteStateError,
        match=r"step 3 \(lxmert.pooler.dense.weight\).*Last good checkpoint: "
        r"\S+step_000000002 ",
    ):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                out,
                "trainer.batch_size=32",
                "trainer.max_steps=10",
                "trainer.checkpoint_every_n_steps=1",
                "data.pretrain.val=null",
            ),
            callbacks=[poison],
        )
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_000000001", "step_000000002"]


def test_resume_with_wrong_architecture_fails_clearly(easy, tmp_path):
    from lxmert_repro.training.pretrain import train_pretrain

    out = tmp_path / "arch"
    train_pretrain(
        _cfg(easy, "pretrain", out, "trainer.batch_size=64", "trainer.max_steps=1", "data.pretrain.val=null")
    )
    with pytest.raises(RuntimeError, match=r"step_000000001: cannot resume, the checkpoint does not match"):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                out,
                "trainer.batch_size=64",
                "trainer.max_steps=2",
                "data.pretrain.val=null",
                "model.hidden_size=64",
                "trainer.resume=auto",
            )
        )


def test_init_from_wrong_feature_size_fails_clearly(easy, tmp_path):
    from lxmert_repro.modeling import LxmertConfig, LxmertForPreTraining, save_model
    from lxmert_repro.training.data_setup import build_vqa_data
    from lxmert_repro.training.models import build_vqa_model

    bad = tmp_path / "bad_model"
    save_model(
        LxmertForPreTraining(
            LxmertConfig(
                hidden_size=32,
                num_attention_heads=4,
                intermediate_size=64,
                l_layers=1,
                r_layers=1,
                x_layers=1,
                visual_feat_dim=99,
                num_qa_labels=3,
            )
        ),
        bad,
    )
    cfg = _cfg(easy, "vqa", tmp_path / "ft", f"finetune.init_from={bad}")
    with pytest.raises(ValueError, match=r"expects 99-d features.*48-d"):
        build_vqa_model(cfg, build_vqa_data(cfg))


def test_missing_data_file_names_the_key(easy, tmp_path):
    from lxmert_repro.training.finetune import train_vqa

    with pytest.raises(FileNotFoundError, match=r"data\.vqa\.train=/nonexistent/split"):
        train_vqa(_cfg(easy, "vqa", tmp_path / "x", "data.vqa.train=/nonexistent/split"))
    with pytest.raises(FileNotFoundError, match=r"data\.features=/no/store"):
        train_vqa(_cfg(easy, "vqa", tmp_path / "y", "data.features=/no/store"))


def test_global_batch_must_divide(easy, tmp_path):
    from lxmert_repro.training.finetune import train_vqa

    with pytest.raises(ValueError, match=r"trainer.batch_size=30 .*grad_accum_steps \(4\)"):
        train_vqa(_cfg(easy, "vqa", tmp_path / "z", "trainer.batch_size=30", "trainer.grad_accum_steps=4"))


def test_fresh_start_in_a_used_run_dir_is_refused(easy, tmp_path):
    from lxmert_repro.training.finetune import train_vqa

    out = tmp_path / "used"
    args = ("trainer.batch_size=64", "trainer.max_steps=1", "data.vqa.test=null", "data.vqa.val=null")
    train_vqa(_cfg(easy, "vqa", out, *args))
    with pytest.raises(FileExistsError, match=r"already holds checkpoints .* trainer.resume=auto"):
        train_vqa(_cfg(easy, "vqa", out, *args))
    m = train_vqa(_cfg(easy, "vqa", out, *args, "trainer.resume=auto"))  # finished: nothing left to train
    assert m["global_step"] == 1


def test_gradient_accumulation_matches_full_batch(easy, tmp_path):
    """Global batch 32 as 2 x 16 accumulated = one batch of 32 (dropout off), within float tolerance."""
    from lxmert_repro.training.finetune import train_vqa

    args = (
        "trainer.batch_size=32",
        "trainer.max_steps=4",
        "data.limit=128",
        "data.vqa.test=null",
        "data.vqa.val=null",
        "model.hidden_dropout_prob=0",
        "model.attention_probs_dropout_prob=0",
        "optim.lr=1e-3",
    )
    train_vqa(_cfg(easy, "vqa", tmp_path / "full", *args))
    train_vqa(_cfg(easy, "vqa", tmp_path / "accum", *args, "trainer.grad_accum_steps=2"))
    a, b = _weights(tmp_path / "full" / "model_last"), _weights(tmp_path / "accum" / "model_last")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5
    rows = [json.loads(l) for l in (tmp_path / "accum" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "train/loss" in r] == [1, 2, 3, 4]  # optimizer steps, not micro-batches


def test_bf16_mixed_precision_on_cpu(easy, tmp_path):
    from lxmert_repro.training.pretrain import train_pretrain

    m = train_pretrain(
        _cfg(
            easy,
            "pretrain",
            tmp_path / "bf16",
            "trainer.mixed_precision=bf16",
            "trainer.batch_size=32",
            "trainer.max_steps=3",
            "data.pretrain.val=null",
        )
    )
    assert m["global_step"] == 3 and torch.isfinite(torch.tensor(m["train/loss"]))


def test_trackers_tensorboard_and_offline_wandb(easy, tmp_path, monkeypatch):
    from lxmert_repro.training.finetune import train_vqa

    monkeypatch.delenv("WANDB_MODE", raising=False)  # the default must be offline by itself
    out = tmp_path / "trk"
    cfg = _cfg(
        easy,
        "vqa",
        out,
        "logger=wandb",
        "trainer.batch_size=64",
        "trainer.max_steps=2",
        "data.limit=128",
        "data.vqa.test=null",
        "trainer.peak_flops=1e12",
    )
    train_vqa(cfg)
    assert list((out / "wandb").glob("offline-run-*")), "wandb must run offline unless configured"
    events = list(out.rglob("events.out.tfevents.*"))
    assert events, "no TensorBoard event file"
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = EventAccumulator(str(events[0].parent)).Reload().Tags()["scalars"]
    assert {"train/loss", "samples_per_s", "tokens_per_s", "model_flops_per_s", "mfu"} <= set(tags), tags
    assert (out / "metrics.jsonl").is_file()


def test_finetune_init_from_transformers_checkpoint_with_answer_table(easy, tmp_path):
    """An imported checkpoint (transformers format, no answers.json beside it): the QA head rows are
    mapped through finetune.pretrain_answers, unmatched task answers get zero rows."""
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.modeling import LxmertConfig, LxmertForPreTraining, export_transformers
    from lxmert_repro.training.data_setup import build_vqa_data
    from lxmert_repro.training.models import build_vqa_model

    task = AnswerVocab.load(easy["answers"]).answers
    table = ["zebra"] + list(reversed(task[1:]))  # task[0] missing from the pretraining table
    (tmp_path / "all_ans.json").write_text(json.dumps([{"ans": a} for a in table]))  # LXMERT's format
    src = LxmertForPreTraining(
        LxmertConfig(
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            l_layers=1,
            r_layers=1,
            x_layers=1,
            vocab_size=300,
            visual_feat_dim=48,
            num_object_labels=5,
            num_attr_labels=3,
            num_qa_labels=len(table),
        )
    )
    export_transformers(src, tmp_path / "hf")
    cfg = _cfg(
        easy,
        "vqa",
        tmp_path / "ft",
        f"finetune.init_from={tmp_path / 'hf'}",
        f"finetune.pretrain_answers={tmp_path / 'all_ans.json'}",
    )
    model = build_vqa_model(cfg, build_vqa_data(cfg))
    w = model.answer_head.classifier.weight
    assert torch.count_nonzero(w[0]) == 0
    for j, a in enumerate(task[1:], start=1):
        assert torch.equal(w[j], src.answer_head.classifier.weight[table.index(a)])


def test_train_fraction_is_a_seeded_random_subset(easy, tmp_path):
    from lxmert_repro.training.data_setup import build_vqa_data

    full = build_vqa_data(_cfg(easy, "vqa", tmp_path / "a"))
    tenth = build_vqa_data(_cfg(easy, "vqa", tmp_path / "b", "data.train_fraction=0.1"))
    again = build_vqa_data(_cfg(easy, "vqa", tmp_path / "c", "data.train_fraction=0.1"))
    other = build_vqa_data(_cfg(easy, "vqa", tmp_path / "d", "data.train_fraction=0.1", "data.subset_seed=1"))
    qids = lambda d: [d.train[i].question_id for i in range(len(d.train))]  # noqa: E731
    assert len(tenth.train) == round(len(full.train) * 0.1)
    assert qids(tenth) == qids(again) != qids(other)
    assert set(qids(tenth)) < set(qids(full)) and qids(tenth) != qids(full)[: len(tenth.train)]  # random, not a prefix
    assert len(tenth.val) == len(full.val)  # only the training split is subsampled
    with pytest.raises(ValueError, match="data.train_fraction must be in"):
        build_vqa_data(_cfg(easy, "vqa", tmp_path / "e", "data.train_fraction=1.5"))


def test_compiled_training_matches_eager(easy, tmp_path):
    """trainer.compile reaches the model through Accelerate: one graph (fullgraph) per step, same weights.

    aot_eager traces forward and backward as inductor would, without code generation (seconds on a CPU).
    """
    from lxmert_repro.training.pretrain import train_pretrain

    args = (
        "trainer.batch_size=16",
        "trainer.max_steps=3",
        "data.pretrain.val=null",
        "model.sparse_predictions=false",
        "model.hidden_dropout_prob=0",
        "model.attention_probs_dropout_prob=0",
        "optim.lr=1e-3",
    )
    compiled = ("trainer.compile.enabled=true", "trainer.compile.backend=aot_eager", "trainer.compile.fullgraph=true")
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    train_pretrain(_cfg(easy, "pretrain", tmp_path / "eager", *args))
    counters.clear()
    try:
        train_pretrain(_cfg(easy, "pretrain", tmp_path / "compiled", *args, *compiled))
        assert counters["stats"]["unique_graphs"] >= 1  # the model really went through dynamo
    finally:
        torch._dynamo.reset()
    a, b = _weights(tmp_path / "eager" / "model_last"), _weights(tmp_path / "compiled" / "model_last")
    assert max((a[k] - b[k]).abs().max().item() for k in a) <= 1e-5

    with pytest.raises(ValueError, match="sparse_predictions=false"):
        train_pretrain(_cfg(easy, "pretrain", tmp_path / "sparse", "trainer.max_steps=1", *compiled))
    with pytest.raises(ValueError, match="cannot be combined with trainer.grad_accum_steps=2"):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                tmp_path / "accum",
                *args,
                "trainer.compile.enabled=true",
                "trainer.compile.mode=reduce-overhead",
                "trainer.grad_accum_steps=2",
            )
        )


def test_pad_to_max_length_gives_static_text_shapes(easy, tmp_path):
    """data.pad_to_max_length: every batch is data.max_length tokens wide (one CUDA graph, not one per length)."""
    from lxmert_repro.training.data_setup import build_pretrain_data, build_vqa_data
    from lxmert_repro.training.loop import make_loader

    for task, build in (("pretrain", build_pretrain_data), ("vqa", build_vqa_data)):
        widths = {}
        for static in (False, True):
            data = build(_cfg(easy, task, tmp_path / task, "data.limit=64", f"data.pad_to_max_length={static}"))
            loader, _ = make_loader(data.train, data.collator, 16, shuffle=False, seed=0)
            widths[static] = {b.input_ids.shape[1] for b in loader}
        assert widths[True] == {20}, (task, widths)
        assert max(widths[False]) < 20, (task, widths)  # by default: the batch's longest question


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU (run on the device machine)")
def test_cuda_graph_training_follows_eager(easy, tmp_path, monkeypatch):
    """trainer.compile.mode=reduce-overhead on a GPU: forward and backward replay as CUDA graphs (none skipped)
    and the losses follow eager training's, step by step."""
    from torch._dynamo.utils import counters

    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    replays = []
    real_replay = torch.cuda.CUDAGraph.replay
    monkeypatch.setattr(torch.cuda.CUDAGraph, "replay", lambda self: (replays.append(1), real_replay(self))[1])
    steps = 8
    args = (
        "trainer.cpu=false",
        "trainer.batch_size=16",
        f"trainer.max_steps={steps}",
        "data.pretrain.val=null",
        "model.sparse_predictions=false",
        "data.pad_to_max_length=true",
        "model.hidden_dropout_prob=0",
        "model.attention_probs_dropout_prob=0",
        "optim.lr=1e-3",
    )
    compiled = (
        "trainer.compile.enabled=true",
        "trainer.compile.mode=reduce-overhead",
        "trainer.compile.fullgraph=true",
    )
    torch._dynamo.reset()
    train_pretrain(_cfg(easy, "pretrain", tmp_path / "eager", *args))
    assert not replays
    counters.clear()
    try:
        train_pretrain(_cfg(easy, "pretrain", tmp_path / "compiled", *args, *compiled))
        assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    finally:
        torch._dynamo.reset()
    # after cudagraph trees' warm-up step every step replays forward and backward (14 replays in 8 steps on an H200)
    assert len(replays) >= 2 * (steps - 2), len(replays)
    loss = {
        k: [r["train/loss"] for r in read_metrics(tmp_path / k) if "train/loss" in r] for k in ("eager", "compiled")
    }
    assert len(loss["compiled"]) == steps
    print("losses eager", loss["eager"], "compiled", loss["compiled"], "replays", len(replays))  # seen with -s
    torch.testing.assert_close(torch.tensor(loss["compiled"]), torch.tensor(loss["eager"]), rtol=1e-4, atol=1e-4)


def test_length_bucketing_cuts_padding_and_resumes_exactly(easy, tmp_path):
    """trainer.length_bucketing: the same questions per epoch in batches of similar length (less padding), and a
    run killed mid-epoch resumes to exactly the weights of an uninterrupted one."""
    from lxmert_repro.training.data_setup import build_vqa_data
    from lxmert_repro.training.finetune import train_vqa
    from lxmert_repro.training.loop import make_loader

    args = (
        "trainer.batch_size=16",
        "data.limit=160",
        "trainer.max_epochs=2",
        "trainer.checkpoint_every_n_steps=3",
        "data.vqa.val=null",
        "data.vqa.test=null",
        "optim.lr=1e-3",
        "trainer.length_bucketing=true",
        "trainer.bucket_window_batches=4",
    )
    data = build_vqa_data(_cfg(easy, "vqa", tmp_path / "x", *args))
    lengths = data.train.text_lengths()
    assert lengths.shape == (len(data.train),) and lengths.min() < lengths.max()
    padded = {}
    for name, lens in (("random", None), ("bucketed", lengths)):
        loader, order = make_loader(data.train, data.collator, 16, shuffle=True, seed=3, lengths=lens, window_batches=4)
        order.set_epoch(1)
        batches = list(loader)
        seen = sorted(q for b in batches for q in b.question_ids.tolist())
        assert seen == sorted(data.train.records.column("question_id"))  # every question once
        padded[name] = sum(int((b.attention_mask == 0).sum()) for b in batches)
    assert padded["bucketed"] < 0.5 * padded["random"], padded

    train_vqa(_cfg(easy, "vqa", tmp_path / "a", *args))

    def kill(trainer, state):
        if state.global_step == 14:  # mid-epoch 2 (10 steps per epoch), last checkpoint at step 12
            raise _Kill()

    with pytest.raises(_Kill):
        train_vqa(_cfg(easy, "vqa", tmp_path / "b", *args), callbacks=[kill])
    train_vqa(_cfg(easy, "vqa", tmp_path / "b", *args, "trainer.resume=auto"))
    a, b = _weights(tmp_path / "a" / "model_last"), _weights(tmp_path / "b" / "model_last")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_log_lines_and_metrics_carry_throughput_and_mfu(easy, tmp_path, caplog):
    """Every train record has samples/s, tokens/s (text + boxes), model FLOP/s and MFU (a peak given);
    the FLOPs are the config's count of each batch, and the log line says the same."""
    import logging

    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    out = tmp_path / "tp"
    with caplog.at_level(logging.INFO, logger="lxmert_repro.training.loop"):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                out,
                "trainer.batch_size=16",
                "trainer.max_steps=4",
                "trainer.log_every_n_steps=2",
                "trainer.peak_flops=1e12",
                "data.pretrain.val=null",
            )
        )
    rows = [r for r in read_metrics(out) if "train/loss" in r]
    assert [r["step"] for r in rows] == [2, 4]
    for r in rows:
        assert r["tokens_per_s"] > r["samples_per_s"] > 0
        assert r["mfu"] == pytest.approx(r["model_flops_per_s"] / 1e12)
        # per sample: real text tokens (at least [CLS], a word, [SEP]) + boxes; a tiny model's step is ~MFLOPs
        assert 4 <= r["tokens_per_s"] / r["samples_per_s"] < 40 + 36
        assert 1e5 < r["model_flops_per_s"] / r["samples_per_s"] < 1e8
    lines = [m for m in caplog.messages if m.startswith("step ")]
    assert len(lines) == 2 and all("mfu=" in m and "tokens_per_s=" in m and "samples_per_s=" in m for m in lines)


def test_logged_losses_are_the_per_step_averages(easy, tmp_path):
    """Logging every 3 steps reports the mean of the per-step losses (and per-task terms) of a run logging
    every step: the device-side sums are the old host-side averages."""
    from lxmert_repro.training.pretrain import train_pretrain
    from lxmert_repro.training.tracking import read_metrics

    def run(name: str, every: int) -> list[dict]:
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                tmp_path / name,
                "trainer.batch_size=16",
                "trainer.max_steps=6",
                f"trainer.log_every_n_steps={every}",
                "data.pretrain.val=null",
            )
        )
        return [r for r in read_metrics(tmp_path / name) if "train/loss" in r]

    each, grouped = run("each", 1), run("grouped", 3)
    assert len(each) == 6 and [r["step"] for r in grouped] == [3, 6]
    for g, chunk in zip(grouped, (each[:3], each[3:])):
        for key in ("train/loss", "train/mlm", "train/itm", "train/obj", "train/feat"):
            assert g[key] == pytest.approx(sum(r[key] for r in chunk) / 3, rel=1e-12, abs=0), key


def test_nonfinite_loss_between_log_steps_still_stops_before_a_bad_checkpoint(easy, tmp_path):
    """Logging every 4 steps, the loss turns NaN at step 5: the run stops at the checkpoint of step 6 (before
    writing it, within log_every steps), with the named error, the step it happened and the last good checkpoint."""
    from lxmert_repro.training.loop import NonFiniteLossError
    from lxmert_repro.training.pretrain import train_pretrain

    def poison(trainer, state):
        if state.global_step == 4:
            with torch.no_grad():
                trainer.accelerator.unwrap_model(trainer.model).lxmert.pooler.dense.weight.fill_(float("nan"))

    out = tmp_path / "nan4"
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite training loss \(nan\) at optimizer step 4, detected "
        r"at step 6 .*step_000000003",
    ):
        train_pretrain(
            _cfg(
                easy,
                "pretrain",
                out,
                "trainer.batch_size=32",
                "trainer.max_steps=10",
                "trainer.log_every_n_steps=4",
                "trainer.checkpoint_every_n_steps=3",
                "data.pretrain.val=null",
            ),
            callbacks=[poison],
        )
    assert (out / "checkpoints" / "step_000000003").is_dir()
    assert not (out / "checkpoints" / "step_000000006").exists()
    assert "nonfinite_loss" in (out / "metrics.jsonl").read_text()
