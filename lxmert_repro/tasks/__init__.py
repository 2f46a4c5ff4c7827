"""Downstream tasks as plug-ins: each is one class (``configs/task/<name>.yaml``, Hydra ``_target_``) that the
generic fine-tuning loop, lxmert-evaluate and lxmert-predict call (the interface: lxmert_repro/tasks/base.py)."""

from lxmert_repro.tasks.base import Task, build_task

__all__ = ["Task", "build_task"]
