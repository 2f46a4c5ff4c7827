"""Entry points: every config and experiment composes (and its objects instantiate), unknown keys are
refused, lxmert-evaluate scores prediction files and checkpoints, lxmert-predict answers an image."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from training_helpers import CONFIG_DIR, TINY_TRAINER, build_easy_vqa_data, compose, data_overrides

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.run([sys.executable, "-m", f"lxmert_repro.cli.{module}", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("name", ["pretrain", "finetune_vqa", "evaluate", "predict"])
def test_entry_point_configs_compose(name, tmp_path):
    cfg = compose(name, [f"paths.output_dir={tmp_path}"])
    assert cfg.task_name in ("pretrain", "finetune_vqa", "evaluate", "predict")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves (??? values stay missing)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_configs_compose_and_instantiate(experiment, tmp_path):
    from hydra.utils import instantiate

    from lxmert_repro.modeling import LxmertConfig
    from lxmert_repro.training.optim import linear_warmup_schedule

    app = "pretrain" if experiment.endswith("pretrain") else "finetune_vqa"
    cfg = compose(app, [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["data"]["features"] and resolved["data"]["tokenizer_dir"].endswith("/tokenizer")
    assert isinstance(instantiate(cfg.model), LxmertConfig)
    opt = instantiate(cfg.optim.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    sched = instantiate(cfg.optim.scheduler)(opt, total_steps=100)
    assert opt.param_groups[0]["lr"] == 0.0 and isinstance(sched, type(linear_warmup_schedule(opt, 10, 0.1)))
    if experiment == "lxmert_paper_pretrain":  # the paper's numbers (docs/faithful.md §5)
        assert (cfg.trainer.batch_size, cfg.optim.lr, cfg.trainer.max_epochs, cfg.optim.warmup_ratio,
                cfg.trainer.grad_clip, cfg.model.hidden_size, cfg.pretrain.qa_start_epoch) == (256, 1e-4, 20, 0.05, 1.0, 768, 10)
        assert cfg.optim.optimizer._target_.endswith("BertAdam") and cfg.optim.optimizer.eps == 1e-6
    if experiment == "lxmert_paper_vqa":
        assert (cfg.trainer.batch_size, cfg.optim.lr, cfg.trainer.max_epochs, cfg.optim.warmup_ratio,
                cfg.trainer.grad_clip) == (32, 5e-5, 4, 0.1, 5.0)


def test_hparams_search_configs_compose(tmp_path):
    for app, search in (("finetune_vqa", "vqa_optuna"), ("pretrain", "pretrain_optuna")):
        cfg = compose(app, [f"hparams_search={search}", f"paths.output_dir={tmp_path}"])
        assert cfg.optimized_metric in ("best/val/accuracy", "best/val/loss")


def test_unknown_config_key_is_refused():
    r = _cli("finetune", "trainer.not_a_key=1")
    assert r.returncode != 0
    assert "Could not override 'trainer.not_a_key'" in r.stderr


def _vqa_v2_files(tmp: Path) -> tuple[Path, Path, Path]:
    anns = [
        {"question_id": 1, "image_id": 10, "question_type": "what color", "answer_type": "other",
         "multiple_choice_answer": "red", "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                                                      for i, a in enumerate(["red"] * 2 + ["blue"] * 8)]},
        {"question_id": 2, "image_id": 10, "question_type": "is there", "answer_type": "yes/no",
         "multiple_choice_answer": "yes", "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1}
                                                      for i in range(10)]},
    ]
    qs = [{"image_id": 10, "question": "what color?", "question_id": 1},
          {"image_id": 10, "question": "is there?", "question_id": 2}]
    a, q, p = tmp / "ann.json", tmp / "q.json", tmp / "pred.json"
    a.write_text(json.dumps({"annotations": anns}))
    q.write_text(json.dumps({"questions": qs}))
    p.write_text(json.dumps([{"question_id": 1, "answer": "red"}, {"question_id": 2, "answer": "yes"}]))
    return a, q, p


def test_evaluate_prediction_file_cli(tmp_path):
    a, q, p = _vqa_v2_files(tmp_path)
    r = _cli("evaluate", f"predictions={p}", f"annotations={a}", f"questions={q}", f"hydra.run.dir={tmp_path / 'run'}")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "run" / "eval_results.json").read_text())
    # "red" matched by 2 humans: each leave-one-out min(1, k/3) → (2 * 1/3 + 8 * 2/3) / 10 = 0.6; "yes": 1
    assert res["overall"] == pytest.approx(80.0)
    assert res["per_answer_type"] == {"other": 60.0, "yes/no": 100.0}
    r = _cli("evaluate", f"predictions={tmp_path / 'missing.json'}", f"annotations={a}", f"hydra.run.dir={tmp_path / 'r2'}")
    assert r.returncode != 0 and "predictions=" in r.stderr and "missing.json" in r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny fine-tuned VQA model on a small easy-VQA subset."""
    from lxmert_repro.training.finetune import train_vqa

    root = tmp_path_factory.mktemp("cli")
    easy = build_easy_vqa_data(root / "data", n_train_images=40, n_test_images=12)
    out = root / "ft"
    metrics = train_vqa(compose("finetune_vqa", TINY_TRAINER + data_overrides(easy, "vqa") + [
        f"paths.output_dir={out}", "trainer.batch_size=32", "trainer.max_epochs=2", "optim.lr=1e-3"]))
    return easy, out, metrics


def test_evaluate_checkpoint_matches_training_run(trained, tmp_path):
    from lxmert_repro.training.evaluate import run_evaluate

    easy, out, metrics = trained
    cfg = compose("evaluate", [f"paths.output_dir={tmp_path}", f"checkpoint={out / 'model_best'}",
                               f"split={easy['test']}", f"features={easy['features']}", "trainer.cpu=true"])
    res = run_evaluate(cfg)
    assert res["soft_accuracy"] == pytest.approx(metrics["test/accuracy"], abs=0.005)  # reported to 2 decimals
    assert json.loads((tmp_path / "eval_results.json").read_text())["questions"] == res["questions"]
    preds = json.loads((tmp_path / "predictions.json").read_text())
    assert len(preds) == res["questions"] and {"question_id", "answer"} == set(preds[0])


def test_predict_from_store_and_with_detector(trained, tmp_path):
    from lxmert_repro.cli.predict import run_predict
    from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir

    easy, out, _ = trained
    image = easy_vqa_image_dir("test") / "0.png"
    cfg = compose("predict", [f"paths.output_dir={tmp_path}", f"checkpoint={out / 'model_best'}", f"features={easy['features']}",
                              "image_id=test_0", f"image={image}", "top_k=3", f"attention_picture={tmp_path / 'att.png'}",
                              "questions=[what color is the shape?,is there a circle?]"])
    res = run_predict(cfg)
    answers = json.loads((out / "model_best" / "answers.json").read_text())["answers"]
    assert [r["question"] for r in res] == ["what color is the shape?", "is there a circle?"]
    for r in res:
        scores = [a["score"] for a in r["answers"]]
        assert len(scores) == 3 and scores == sorted(scores, reverse=True) and all(0 < s < 1 for s in scores)
        assert all(a["answer"] in answers for a in r["answers"])
        assert len(r["box_attention"]) == 2 and sum(r["box_attention"]) == pytest.approx(1.0, abs=1e-3)
        assert Path(r["attention_picture"]).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "predictions.json").read_text()) == res

    # with a detector: a (random-weight) easy-VQA detector gives 256-d regions; the 48-d model refuses them clearly
    from lxmert_repro.features.detectors import build_detector, save_detector

    det_cfg = OmegaConf.load(Path(CONFIG_DIR) / "detector" / "easy_vqa_small.yaml")
    det_dir = save_detector(build_detector(det_cfg), det_cfg, tmp_path / "det")
    cfg = compose("predict", [f"paths.output_dir={tmp_path}", f"checkpoint={out / 'model_best'}", f"detector_checkpoint={det_dir}",
                              f"image={image}", "questions=what shape is it?"])
    with pytest.raises(ValueError, match=r"256-d features.*expects 48-d"):
        run_predict(cfg)

    # a model that takes the detector's 256-d regions (untrained: this checks the image → answers path)
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.modeling import LxmertConfig, LxmertForVQA
    from lxmert_repro.training.models import save_run_model

    vocab = AnswerVocab.load(out / "model_best" / "answers.json")
    m = LxmertForVQA(LxmertConfig(hidden_size=32, num_attention_heads=4, intermediate_size=64, l_layers=1, r_layers=1,
                                  x_layers=1, vocab_size=300, visual_feat_dim=256), len(vocab))
    save_run_model(m, tmp_path / "m256", answers=vocab, tokenizer_dir=out / "model_best" / "tokenizer")
    cfg = compose("predict", [f"paths.output_dir={tmp_path}", f"checkpoint={tmp_path / 'm256'}", f"detector_checkpoint={det_dir}",
                              f"image={image}", "questions=what shape is it?", "top_k=2",
                              f"attention_picture={tmp_path / 'det.png'}"])
    res = run_predict(cfg)
    assert len(res) == 1 and len(res[0]["answers"]) == 2 and len(res[0]["box_attention"]) >= 1
    assert (tmp_path / "det.png").is_file()


def test_pretrain_cli_runs_and_writes_its_run_dir(trained, tmp_path):
    easy, _, _ = trained
    run = tmp_path / "run"
    r = _cli("pretrain", *data_overrides(easy, "pretrain"), f"hydra.run.dir={run}", "model=lxmert_tiny",
             "trainer.cpu=true", "trainer.progress_bar=false", "trainer.batch_size=32", "trainer.max_steps=2",
             "data.pretrain.val=null")
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["global_step"] == 2 and final["train/loss"] > 0
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "pretrain.log").is_file()
    assert (run / "model_last" / "model.safetensors").is_file() and (run / "checkpoints" / "step_000000002").is_dir()
