"""Entry points: every config and experiment composes (and its objects instantiate), unknown keys are
refused, lxmert-evaluate scores prediction files and checkpoints, lxmert-predict answers an image."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from training_helpers import CONFIG_DIR, TINY_TRAINER, build_easy_vqa_data, compose, data_overrides

torch.set_num_threads(1)
REPO = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (Path(CONFIG_DIR) / "experiment").glob("*.yaml"))


def _cli(module: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", f"lxmert_repro.cli.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("name", ["pretrain", "finetune", "evaluate", "predict"])
def test_entry_point_configs_compose(name, tmp_path):
    cfg = compose(name, [f"paths.output_dir={tmp_path}"])
    assert cfg.task_name in ("pretrain", "finetune_vqa", "evaluate", "predict")
    OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves (??? values stay missing)


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_configs_compose_and_instantiate(experiment, tmp_path):
    from hydra.utils import instantiate

    from lxmert_repro.modeling import LxmertConfig
    from lxmert_repro.training.optim import linear_warmup_schedule

    app = "pretrain" if experiment.endswith("pretrain") else "finetune"
    cfg = compose(app, [f"experiment={experiment}", f"paths.output_dir={tmp_path}"])
    resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert resolved["data"]["features"] and resolved["data"]["tokenizer_dir"].endswith("/tokenizer")
    assert isinstance(instantiate(cfg.model), LxmertConfig)
    opt = instantiate(cfg.optim.optimizer)([torch.nn.Parameter(torch.zeros(2))])
    sched = instantiate(cfg.optim.scheduler)(opt, total_steps=100)
    assert opt.param_groups[0]["lr"] == 0.0 and isinstance(sched, type(linear_warmup_schedule(opt, 10, 0.1)))
    if experiment == "lxmert_paper_pretrain":  # the paper's numbers (docs/faithful.md §5)
        assert (
            cfg.trainer.batch_size,
            cfg.optim.lr,
            cfg.trainer.max_epochs,
            cfg.optim.warmup_ratio,
            cfg.trainer.grad_clip,
            cfg.model.hidden_size,
            cfg.pretrain.qa_start_epoch,
        ) == (256, 1e-4, 20, 0.05, 1.0, 768, 10)
        assert cfg.optim.optimizer._target_.endswith("BertAdam") and cfg.optim.optimizer.eps == 1e-6
    if experiment == "lxmert_paper_vqa":
        assert (
            cfg.trainer.batch_size,
            cfg.optim.lr,
            cfg.trainer.max_epochs,
            cfg.optim.warmup_ratio,
            cfg.trainer.grad_clip,
        ) == (32, 5e-5, 4, 0.1, 5.0)


def test_hparams_search_configs_compose(tmp_path):
    for app, search in (("finetune", "vqa_optuna"), ("pretrain", "pretrain_optuna")):
        cfg = compose(app, [f"hparams_search={search}", f"paths.output_dir={tmp_path}"])
        assert cfg.optimized_metric in ("best/val/accuracy", "best/val/loss")


def test_unknown_config_key_is_refused():
    line = _one_line_error(_cli_user("finetune", "trainer.not_a_key=1"), "lxmert-finetune")
    assert "Could not override 'trainer.not_a_key'" in line and "Key 'not_a_key' is not in struct" in line
    line = _one_line_error(_cli_user("finetune", "model=nope"), "lxmert-finetune")
    assert "Could not find 'model/nope' Available options in 'model': lxmert_base" in line
    assert "Config search path" not in line


def _vqa_v2_files(tmp: Path) -> tuple[Path, Path, Path]:
    anns = [
        {
            "question_id": 1,
            "image_id": 10,
            "question_type": "what color",
            "answer_type": "other",
            "multiple_choice_answer": "red",
            "answers": [
                {"answer": a, "answer_confidence": "yes", "answer_id": i + 1}
                for i, a in enumerate(["red"] * 2 + ["blue"] * 8)
            ],
        },
        {
            "question_id": 2,
            "image_id": 10,
            "question_type": "is there",
            "answer_type": "yes/no",
            "multiple_choice_answer": "yes",
            "answers": [{"answer": "yes", "answer_confidence": "yes", "answer_id": i + 1} for i in range(10)],
        },
    ]
    qs = [
        {"image_id": 10, "question": "what color?", "question_id": 1},
        {"image_id": 10, "question": "is there?", "question_id": 2},
    ]
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
    r = _cli(
        "evaluate", f"predictions={tmp_path / 'missing.json'}", f"annotations={a}", f"hydra.run.dir={tmp_path / 'r2'}"
    )
    assert r.returncode != 0 and "predictions=" in r.stderr and "missing.json" in r.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny fine-tuned VQA model on a small easy-VQA subset."""
    from lxmert_repro.training.finetune import train_vqa

    root = tmp_path_factory.mktemp("cli")
    easy = build_easy_vqa_data(root / "data", n_train_images=40, n_test_images=12)
    out = root / "ft"
    metrics = train_vqa(
        compose(
            "finetune",
            TINY_TRAINER
            + data_overrides(easy, "vqa")
            + [f"paths.output_dir={out}", "trainer.batch_size=32", "trainer.max_epochs=2", "optim.lr=1e-3"],
        )
    )
    return easy, out, metrics


def test_evaluate_checkpoint_matches_training_run(trained, tmp_path):
    from lxmert_repro.training.evaluate import run_evaluate

    easy, out, metrics = trained
    cfg = compose(
        "evaluate",
        [
            f"paths.output_dir={tmp_path}",
            f"checkpoint={out / 'model_best'}",
            f"split={easy['test']}",
            f"features={easy['features']}",
            "trainer.cpu=true",
        ],
    )
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
    cfg = compose(
        "predict",
        [
            f"paths.output_dir={tmp_path}",
            f"checkpoint={out / 'model_best'}",
            f"features={easy['features']}",
            "image_id=test_0",
            f"image={image}",
            "top_k=3",
            f"attention_picture={tmp_path / 'att.png'}",
            "questions=[what color is the shape?,is there a circle?]",
        ],
    )
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
    cfg = compose(
        "predict",
        [
            f"paths.output_dir={tmp_path}",
            f"checkpoint={out / 'model_best'}",
            f"detector_checkpoint={det_dir}",
            f"image={image}",
            "questions=what shape is it?",
        ],
    )
    with pytest.raises(ValueError, match=r"256-d features.*expects 48-d"):
        run_predict(cfg)

    # a model that takes the detector's 256-d regions (untrained: this checks the image → answers path)
    from lxmert_repro.data.answers import AnswerVocab
    from lxmert_repro.modeling import LxmertConfig, LxmertForVQA
    from lxmert_repro.training.models import save_run_model

    vocab = AnswerVocab.load(out / "model_best" / "answers.json")
    m = LxmertForVQA(
        LxmertConfig(
            hidden_size=32,
            num_attention_heads=4,
            intermediate_size=64,
            l_layers=1,
            r_layers=1,
            x_layers=1,
            vocab_size=300,
            visual_feat_dim=256,
        ),
        len(vocab),
    )
    save_run_model(m, tmp_path / "m256", answers=vocab, tokenizer_dir=out / "model_best" / "tokenizer")
    cfg = compose(
        "predict",
        [
            f"paths.output_dir={tmp_path}",
            f"checkpoint={tmp_path / 'm256'}",
            f"detector_checkpoint={det_dir}",
            f"image={image}",
            "questions=what shape is it?",
            "top_k=2",
            f"attention_picture={tmp_path / 'det.png'}",
        ],
    )
    res = run_predict(cfg)
    assert len(res) == 1 and len(res[0]["answers"]) == 2 and len(res[0]["box_attention"]) >= 1
    assert (tmp_path / "det.png").is_file()


def test_pretrain_cli_runs_and_writes_its_run_dir(trained, tmp_path):
    easy, _, _ = trained
    run = tmp_path / "run"
    r = _cli(
        "pretrain",
        *data_overrides(easy, "pretrain"),
        f"hydra.run.dir={run}",
        "model=lxmert_tiny",
        "trainer.cpu=true",
        "trainer.progress_bar=false",
        "trainer.batch_size=32",
        "trainer.max_steps=2",
        "data.pretrain.val=null",
    )
    assert r.returncode == 0, r.stderr[-3000:]
    final = json.loads((run / "final_metrics.json").read_text())
    assert final["global_step"] == 2 and final["train/loss"] > 0
    assert (run / ".hydra" / "config.yaml").is_file() and (run / "pretrain.log").is_file()
    assert (run / "model_last" / "model.safetensors").is_file() and (run / "checkpoints" / "step_000000002").is_dir()


def _cli_user(module: str, *args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it: no HYDRA_FULL_ERROR (the suite sets it for in-process Hydra errors)."""
    env = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    env.update(OMP_NUM_THREADS="1", WANDB_MODE="offline")
    return subprocess.run(
        [sys.executable, "-m", f"lxmert_repro.cli.{module}", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _one_line_error(r: subprocess.CompletedProcess, prog: str) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    assert "Traceback" not in r.stderr, r.stderr[-3000:]
    lines = [line for line in r.stderr.splitlines() if line.startswith(f"{prog}: error: ")]
    assert len(lines) == 1, r.stderr[-3000:]
    return lines[0]


@pytest.mark.parametrize(
    "module,prog,args,expected",
    [
        (
            "finetune",
            "lxmert-finetune",
            ["data.features=/no/store", "data.tokenizer_dir=/no/tok", "model=lxmert_tiny", "trainer.cpu=true"],
            "data.tokenizer_dir=/no/tok: no such file",
        ),
        ("predict", "lxmert-predict", ["checkpoint=/no/model", "questions=what?"], "detector_checkpoint=DIR"),
        ("extract", "lxmert-extract", ["input=/no/images", "output=OUT/store"], "/no/images"),
        (
            "train_detector",
            "lxmert-train-detector",
            ["data.train_json=/no/train.json", "output_dir=OUT/det", "epochs=1"],
            "/no/train.json",
        ),
    ],
)
def test_bad_input_is_one_line_without_traceback(module, prog, args, expected, tmp_path):
    """Errors raised deep in the apps (every app's config errors: test_wrong_config_value_...)."""
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    if module not in ("extract", "train_detector"):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    line = _one_line_error(_cli_user(module, *args), prog)
    assert expected in line


def test_debug_flag_shows_the_traceback(tmp_path):
    r = _cli_user(
        "evaluate",
        "--debug",
        "predictions=/no/preds.json",
        "annotations=/no/ann.json",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert r.returncode != 0 and "Traceback" in r.stderr and "/no/preds.json" in r.stderr


def test_refused_rerun_leaves_the_finished_runs_record_untouched(trained, tmp_path):
    """A finished run, then the same run dir again with another lr: refused before Hydra writes anything."""
    easy, _, _ = trained
    run = tmp_path / "run"
    args = [
        *data_overrides(easy, "vqa"),
        f"hydra.run.dir={run}",
        "model=lxmert_tiny",
        "trainer.cpu=true",
        "trainer.progress_bar=false",
        "trainer.batch_size=32",
        "trainer.max_steps=1",
        "data.vqa.test=null",
    ]
    r = _cli_user("finetune", *args)
    assert r.returncode == 0, r.stderr[-3000:]
    recorded = {p: p.read_bytes() for p in [run / "config.yaml", *(run / ".hydra").iterdir()]}
    line = _one_line_error(_cli_user("finetune", *args, "optim.lr=0.123"), "lxmert-finetune")
    assert str(run) in line and "trainer.resume=auto" in line
    assert {p: p.read_bytes() for p in [run / "config.yaml", *(run / ".hydra").iterdir()]} == recorded
    r = _cli_user("finetune", *args, "trainer.resume=auto")  # continuing the run is still allowed
    assert r.returncode == 0, r.stderr[-3000:]


def _finetune_from(trained, run, *extra):
    """lxmert-finetune from the trained tiny VQA model (finetune.init_from), one step."""
    easy, out, _ = trained
    return _cli_user(
        "finetune",
        *data_overrides(easy, "vqa"),
        f"hydra.run.dir={run}",
        f"finetune.init_from={out / 'model_best'}",
        "trainer.cpu=true",
        "trainer.progress_bar=false",
        "trainer.batch_size=32",
        "trainer.max_steps=1",
        "data.vqa.test=null",
        *extra,
    )


def test_finetune_init_from_takes_the_runs_dropout_and_refuses_another_size(trained, tmp_path):
    """With finetune.init_from the checkpoint decides the model, but model.<field> values the user gives apply as
    transformers' from_pretraining(**kwargs) does: a dropout probability is set on the loaded config (recorded in
    config.yaml and the saved model), a size that differs from the checkpoint's is one error line naming the field,
    the checkpoint's value and the requested one. The model group's own values (here lxmert_base's, 768 wide)
    are not the user's and do not count."""
    import yaml

    _, out, _ = trained
    loaded = json.loads((out / "model_best" / "model_config.json").read_text())["config"]
    assert loaded["hidden_dropout_prob"] == 0.1 and loaded["hidden_size"] == 32
    run = tmp_path / "run"
    r = _finetune_from(trained, run, "model.hidden_dropout_prob=0.25")  # default group: lxmert_base
    assert r.returncode == 0, r.stderr[-3000:]
    recorded = yaml.safe_load((run / "config.yaml").read_text())["model"]
    saved = json.loads((run / "model_last" / "model_config.json").read_text())["config"]
    assert recorded["hidden_dropout_prob"] == 0.25 and saved["hidden_dropout_prob"] == 0.25
    assert {k: v for k, v in saved.items() if k != "hidden_dropout_prob"} == {
        k: v for k, v in loaded.items() if k != "hidden_dropout_prob"
    }
    line = _one_line_error(
        _finetune_from(trained, tmp_path / "run2", "model=lxmert_tiny", "model.hidden_size=64"), "lxmert-finetune"
    )
    assert "model.hidden_size=64" in line and "hidden_size=32" in line and str(out / "model_best") in line


APP_SCHEMAS = {  # config name -> (schema import path, overrides filling its ??? values)
    "pretrain": ("lxmert_repro.cli.pretrain.PretrainApp", ["data.features=f"]),
    "finetune": ("lxmert_repro.cli.finetune.FinetuneApp", ["data.features=f"]),
    "evaluate": ("lxmert_repro.cli.evaluate.EvaluateApp", []),
    "predict": ("lxmert_repro.cli.predict.PredictApp", ["checkpoint=c", "questions=q"]),
    "prepare": ("lxmert_repro.cli.prepare.PrepareApp", ["features=f"]),
    "extract": ("lxmert_repro.cli.extract.ExtractApp", ["input=i", "output=o"]),
    "train_detector": ("lxmert_repro.cli.train_detector.TrainDetectorApp", []),
}


def _validate(name: str, overrides: list[str]) -> None:
    from hydra.utils import get_object

    from lxmert_repro.config_schema import validate_config

    schema, fill = APP_SCHEMAS[name]
    paths = [] if name in ("extract", "train_detector") else ["paths.output_dir=/tmp/out"]
    if name == "train_detector":
        import lxmert_repro.cli.train_detector  # noqa: F401  (registers its easy_vqa_images resolver)
    validate_config(compose(name, paths + fill + overrides), get_object(schema))


@pytest.mark.parametrize(
    "name,overrides",
    [(name, []) for name in APP_SCHEMAS]
    + [("pretrain", [f"experiment={e}"]) for e in EXPERIMENTS if e.endswith("pretrain")]
    + [("finetune", [f"experiment={e}"]) for e in EXPERIMENTS if not e.endswith("pretrain")]
    + [
        ("prepare", [f"data={d.stem}", "tokenizer=bert_base_uncased"])
        for d in sorted((Path(CONFIG_DIR) / "data").glob("*.yaml"))
    ]
    + [("extract", [f"detector={d.stem}"]) for d in sorted((Path(CONFIG_DIR) / "detector").glob("*.yaml"))]
    + [
        (app, [f"model={m.stem}"])
        for m in sorted((Path(CONFIG_DIR) / "model").glob("*.yaml"))
        for app in ("pretrain", "finetune")
    ]
    + [("finetune", ["optim=adamw", "logger=wandb", "trainer=gpu"]), ("pretrain", ["hparams_search=pretrain_optuna"])],
)
def test_every_shipped_config_passes_its_schema(name, overrides):
    _validate(name, overrides)


@pytest.mark.parametrize(
    "name,override,message",
    [
        ("finetune", "optim.lr=abc", "optim.lr: 'abc' is not a float"),
        ("finetune", "optim.lr=-1", "optim.lr: -1.0 is not a positive float"),
        ("pretrain", "trainer.batch_size=eight", "trainer.batch_size: 'eight' is not an integer"),
        ("pretrain", "trainer.batch_size=0", "trainer.batch_size: 0 is not a positive integer"),
        ("pretrain", "+trainer.not_a_key=1", "trainer.not_a_key: unknown key; expected one of batch_size,"),
        ("pretrain", "trainer.mixed_precision=fp8", "trainer.mixed_precision: 'fp8' is not one of no | fp16 | bf16"),
        ("pretrain", "trainer.shuffle=maybe", "trainer.shuffle: 'maybe' is not a boolean"),
        ("pretrain", "model.hidden_size=big", "model.hidden_size: 'big' is not an integer"),
        ("pretrain", "+model.hiden_size=64", "model.hiden_size: unknown key; lxmert_repro.modeling.LxmertConfig takes"),
        ("pretrain", "optim.optimizer.eps=tiny", "optim.optimizer.eps: 'tiny' is not a float"),
        ("pretrain", "pretrain.mlm_prob=1.5", "pretrain.mlm_prob: 1.5 is not a probability in [0, 1]"),
        (
            "pretrain",
            "pretrain.obj_mask_split=[0.5,0.1,0.1]",
            "pretrain.obj_mask_split: [0.5, 0.1, 0.1] is not 3 probabilities (zeroed, swapped, unchanged) summing to 1",
        ),
        ("pretrain", "objectives.mlm_loss_weight=heavy", "objectives.mlm_loss_weight: 'heavy' is not a float"),
        (
            "pretrain",
            "+objectives.task_mlm=true",
            "objectives.task_mlm: unknown key; lxmert_repro.modeling.PretrainObjectives takes",
        ),
        ("pretrain", "logger.trackers=[mlflow]", "logger.trackers: 'mlflow' is not a tracker name"),
        ("finetune", "data.vqa.train=null", "data.vqa.train: None is not a string"),
        # data.<task> is checked against the chosen task's own splits schema (Task.splits_schema)
        ("finetune", "+data.vqa.val_questions=q.json", "data.vqa.val_questions: unknown key; expected one of answers,"),
        (
            "finetune",
            "task=gqa +data.gqa.val_annotations=a.json",
            "data.gqa.val_annotations: unknown key; expected one of answers,",
        ),
        ("finetune", "task=nlvr2 +data.nlvr2.val_choices=c.json", "data.nlvr2.val_choices: unknown key"),
        ("finetune", "data.train_fraction=2", "data.train_fraction: 2.0 is not a float in (0, 1]"),
        ("finetune", "tokenizer.vocab_size=many", "tokenizer.vocab_size: 'many' is not an integer"),
        ("prepare", "missing_images=keep", "missing_images: 'keep' is not one of error | drop"),
        ("prepare", "data.answers.min_count=nine", "data.answers.min_count: 'nine' is not an integer"),
        ("prepare", "data.splits.train.0.split=3.5", None),  # a str parameter given a number: OmegaConf converts it
        ("evaluate", "batch_size=x", "batch_size: 'x' is not an integer"),
        ("predict", "top_k=0", "top_k: 0 is not a positive integer"),
        ("predict", "image_reader.background=white", None),  # ImageReader checks its own value when built
        ("extract", "feat_dtype=int8", "feat_dtype: 'int8' is not one of float16 | float32"),
        ("extract", "detector.model.feat_dim=wide", "detector.model.feat_dim: 'wide' is not an integer"),
        ("extract", "detector.weights_format=onnx", "detector.weights_format: 'onnx' is not one of ours | detectron2"),
        ("train_detector", "optim.lr=fast", "optim.lr: 'fast' is not a float"),
        ("train_detector", "data.limit=some", "data.limit: 'some' is not an integer or null"),
    ],
)
def test_schema_errors_name_the_key_the_value_and_the_expectation(name, override, message):
    from lxmert_repro.config_schema import ConfigError

    if message is None:
        _validate(name, override.split())
        return
    with pytest.raises(ConfigError) as info:
        _validate(name, override.split())
    assert str(info.value).startswith(message), str(info.value)


def test_missing_value_is_named():
    from lxmert_repro.config_schema import ConfigError

    with pytest.raises(ConfigError, match=r"^data\.features: missing value \(\?\?\?\); set it"):
        _validate("finetune", ["data.features=???"])


@pytest.mark.parametrize(
    "module,prog,args,message",
    [
        ("finetune", "lxmert-finetune", ["optim.lr=abc"], "optim.lr: 'abc' is not a float"),
        ("pretrain", "lxmert-pretrain", ["trainer.batch_size=eight"], "trainer.batch_size: 'eight' is not an integer"),
        ("evaluate", "lxmert-evaluate", ["batch_size=x"], "batch_size: 'x' is not an integer"),
        ("predict", "lxmert-predict", ["checkpoint=c", "questions=q", "top_k=many"], "top_k: 'many' is not an integer"),
        ("prepare", "lxmert-prepare", ["features=f", "missing_images=keep"], "missing_images: 'keep' is not one of"),
        (
            "extract",
            "lxmert-extract",
            ["input=i", "output=OUT/o", "batch_size=big"],
            "batch_size: 'big' is not an integer",
        ),
        (
            "train_detector",
            "lxmert-train-detector",
            ["output_dir=OUT/d", "optim.lr=fast"],
            "optim.lr: 'fast' is not a float",
        ),
        (
            "finetune",
            "lxmert-finetune",
            ["-m", "optim.lr=abc,xyz", "hydra.sweep.dir=OUT/sweep"],
            "optim.lr: 'abc' is not a float",
        ),  # each job of a sweep is checked
    ],
)
def test_wrong_config_value_stops_every_app_with_one_line(module, prog, args, message, tmp_path):
    args = [a.replace("OUT", str(tmp_path)) for a in args]
    if module not in ("extract", "train_detector"):
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    line = _one_line_error(_cli_user(module, *args), prog)
    assert line == f"{prog}: error: {message}" or line.startswith(f"{prog}: error: {message}"), line
