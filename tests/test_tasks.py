"""The task interface: every task config instantiates its Task and its split paths, the old config name and the
old data.vqa.* keys still compose, a _target_ that is no Task is refused, the report's task sections."""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lxmert_repro.cli import CONFIG_DIR

TASKS = sorted(p.stem for p in (Path(CONFIG_DIR) / "task").glob("*.yaml"))


def compose(config_name: str, overrides: list[str]):
    """An entry point's composed config (the package's own config dir: no test-helper module needed)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name=config_name, overrides=overrides)


@pytest.mark.parametrize("name", TASKS)
def test_every_task_config_gives_its_task_and_split_keys(name, tmp_path):
    from lxmert_repro.tasks import Task, build_task

    cfg = compose("finetune", [f"task={name}", f"paths.output_dir={tmp_path}"])
    task = build_task(cfg)
    assert isinstance(task, Task) and task.name == name and cfg.task_name == f"finetune_{name}"
    assert {"train", "val", "test", "answers"} <= set(cfg.data[name])
    assert [k for k in ("vqa", "gqa", "nlvr2") if k in cfg.data] == [name]  # only the chosen task's splits
    assert isinstance(build_task(compose("evaluate", [f"task={name}", f"paths.output_dir={tmp_path}"])), type(task))


def test_old_config_name_and_old_keys_still_work(tmp_path):
    new = compose("finetune", ["data.vqa.train=/x", f"paths.output_dir={tmp_path}"])
    old = compose("finetune_vqa", ["data.vqa.train=/x", f"paths.output_dir={tmp_path}"])
    assert OmegaConf.to_container(old) == OmegaConf.to_container(new)
    assert new.data.vqa.train == "/x" and new.task_name == "finetune_vqa"


def test_a_target_that_is_no_task_is_refused(tmp_path):
    from lxmert_repro.tasks import build_task

    cfg = compose("finetune", ["task._target_=collections.OrderedDict", f"paths.output_dir={tmp_path}"])
    with pytest.raises(TypeError, match="task._target_=collections.OrderedDict is not a lxmert_repro.tasks.Task"):
        build_task(cfg)


def test_report_sections():
    from lxmert_repro.evaluation.report import gqa_section, nlvr2_section

    g = gqa_section({"test/accuracy": 99.5, "test/binary": 99.0, "test/distribution": 0.0123})
    assert "| accuracy | 99.50 % |" in g and "| binary | 99.00 % |" in g and "| distribution | 0.01 |" in g
    n = nlvr2_section(
        {"test/accuracy": 96.0, "test/consistency": 90.0}, {"test/accuracy": 50.5, "test/consistency": 3.0}
    )
    assert "| LXMERT | 96.00 | 90.00 |" in n and "| text only | 50.50 | 3.00 |" in n
    assert "Gap to the text-only model: 45.50 points." in n
