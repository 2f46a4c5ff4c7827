"""``lxmert-evaluate``: score a prediction file with the task's official metric (task=vqa | gqa | nlvr2; no model),
or evaluate a fine-tuned model dir on a prepared split. Hydra app (configs/evaluate.yaml); prints JSON."""
from __future__ import annotations

import json

import hydra
from omegaconf import DictConfig

from lxmert_repro.cli import CONFIG_DIR, prepare_argv


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="evaluate")
def _app(cfg: DictConfig) -> float | None:
    from lxmert_repro.training.evaluate import run_evaluate

    result = run_evaluate(cfg)
    print(json.dumps({k: v for k, v in result.items() if k != "per_question_type"}, indent=2))
    overall = result.get("overall", result.get("accuracy", result.get("soft_accuracy")))
    return None if overall is None else float(overall)


def main() -> None:
    prepare_argv()
    _app()


if __name__ == "__main__":
    main()
