"""Checkpoint discovery for resume: only complete checkpoints count, newest by step, clear errors."""

from __future__ import annotations

import json

import pytest

from lxmert_repro.training.checkpointing import (
    TRAINER_STATE_FILE,
    TrainerState,
    find_checkpoint,
    list_checkpoints,
    read_trainer_state,
    resolve_resume,
)


def _ckpt(root, name, complete=True, step=0):
    d = root / "checkpoints" / name
    d.mkdir(parents=True)
    (d / "model.safetensors").write_bytes(b"x")
    if complete:
        (d / TRAINER_STATE_FILE).write_text(json.dumps({"state": TrainerState(global_step=step).to_dict()}))
    return d


def test_only_complete_checkpoints_are_found_newest_last(tmp_path):
    _ckpt(tmp_path, "step_000000009", step=9)
    _ckpt(tmp_path, "step_000000010", step=10)
    _ckpt(tmp_path, "step_000000011", complete=False)  # killed before its state file: incomplete
    _ckpt(tmp_path, ".tmp-step_000000012", step=12)  # still being written
    names = [p.name for p in list_checkpoints(tmp_path)]
    assert names == ["step_000000009", "step_000000010"]  # numeric order, incomplete/tmp ignored
    assert find_checkpoint(tmp_path).name == "step_000000010"
    assert resolve_resume("auto", tmp_path).name == "step_000000010"
    state, record = read_trainer_state(find_checkpoint(tmp_path))
    assert state.global_step == 10 and "state" in record


def test_resume_modes(tmp_path):
    assert resolve_resume(None, tmp_path) is None
    assert resolve_resume("auto", tmp_path) is None  # nothing yet: fresh start
    c = _ckpt(tmp_path, "step_000000003", step=3)
    assert resolve_resume(str(c), tmp_path / "elsewhere") == c  # an explicit checkpoint
    assert resolve_resume(str(tmp_path), tmp_path / "elsewhere") == c  # a run dir: its latest
    with pytest.raises(FileNotFoundError, match="trainer.resume=/no/such/run"):
        resolve_resume("/no/such/run", tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        resolve_resume(str(tmp_path / "empty"), tmp_path)


def test_bad_trainer_state_is_named(tmp_path):
    d = tmp_path / "step_000000001"
    d.mkdir()
    (d / TRAINER_STATE_FILE).write_text("{not json")
    with pytest.raises(ValueError, match=r"step_000000001/trainer_state.json: unreadable"):
        read_trainer_state(d)
    (d / TRAINER_STATE_FILE).write_text(json.dumps({"config": {}}))
    with pytest.raises(ValueError, match="field 'state' missing"):
        read_trainer_state(d)
