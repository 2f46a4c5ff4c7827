"""Typed config checking: an app's composed config against its schema, before the app does any work.

Schemas are dataclasses kept next to what they configure (``TrainerConfig`` in training/loop.py,
``OptimConfig`` in training/optim.py, ...), gathered per app (``FinetuneApp`` in cli/finetune.py, ...).
OmegaConf merges the resolved config into the structured schema (types, unknown keys), then builds the
dataclasses, whose ``__post_init__`` checks values. Nodes with ``_target_`` (model, tokenizer, image
reader, optimizer, data readers, detector builders) are checked against their target's own signature:
the class or function they build is their schema. Errors name the key, the value and what was expected,
e.g. ``optim.lr: 'abc' is not a float``.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from omegaconf import MISSING, DictConfig, OmegaConf
from omegaconf.errors import (
    ConfigAttributeError,
    ConfigKeyError,
    ConfigTypeError,
    MissingMandatoryValue,
    OmegaConfBaseException,
    ValidationError,
)

_HYDRA_KEYS = ("_target_", "_partial_", "_convert_", "_recursive_", "_args_")


class ConfigError(ValueError):
    """A config key or value its schema refuses; the message names the key, the value and the expectation."""


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    """For schemas' ``__post_init__``: ``key: value is not <expected>`` unless ``ok`` (or the value is still
    missing, as in a group's defaults: missing values are reported as such)."""
    if not ok and value != MISSING:
        raise ConfigError(f"{key}: {value!r} is not {expected}")


def one_of(key: str, value: Any, choices: Iterable[Any]) -> None:
    choices = list(choices)
    check(value in choices, key, value, "one of " + " | ".join(map(str, choices)))


def _describe(annotation: Any) -> str:
    """What a value of ``annotation`` looks like, for messages."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        return " or ".join(_describe(a) for a in rest) + (" or null" if len(rest) < len(args) else "")
    if origin in (list, tuple) or annotation in (list, tuple):
        return "a list" + (f" of {_describe(args[0]).removeprefix('a ').removeprefix('an ')}s" if args else "")
    if origin is dict or annotation is dict or dataclasses.is_dataclass(annotation):
        return "a mapping"
    names = {int: "an integer", float: "a float", bool: "a boolean (true/false)", str: "a string", Path: "a path"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _field_annotation(schema: type, path: list[str]) -> Any:
    """The annotation of the field at ``path`` below dataclass ``schema`` (None when unknown)."""
    ann: Any = schema
    for part in path:
        while typing.get_origin(ann) in (typing.Union, types.UnionType):
            ann = next(a for a in typing.get_args(ann) if a is not type(None))
        if dataclasses.is_dataclass(ann):
            hints = typing.get_type_hints(ann)
            if part not in hints:
                return None
            ann = hints[part]
        elif typing.get_origin(ann) in (list, dict) and typing.get_args(ann):
            ann = typing.get_args(ann)[-1]
        else:
            return None
    return ann


def _lookup(plain: Any, path: list[str]) -> Any:
    for part in path:
        if isinstance(plain, dict):
            plain = plain.get(part)
        elif isinstance(plain, list) and part.isdigit() and int(part) < len(plain):
            plain = plain[int(part)]
        else:
            return None
    return plain


def _message(e: OmegaConfBaseException, schema: type, plain: dict, prefix: str) -> str:
    key = str(getattr(e, "full_key", "") or "")
    path = [p for p in key.replace("[", ".").replace("]", "").split(".") if p]
    full = ".".join(p for p in (prefix, key) if p)
    if isinstance(e, (ConfigKeyError, ConfigAttributeError)) and "not in" in str(e):
        parent = _field_annotation(schema, path[:-1])
        known = sorted(f.name for f in dataclasses.fields(parent)) if dataclasses.is_dataclass(parent) else []
        return f"{full}: unknown key" + (f"; expected one of {', '.join(known)}" if known else "")
    if isinstance(e, MissingMandatoryValue):
        return f"{full}: missing value (???); set it, e.g. {full}=..."
    ann = _field_annotation(schema, path)
    value = _lookup(plain, path)
    if ann is not None:
        return f"{full}: {value!r} is not {_describe(ann)}"
    return f"{full}: {str(e).splitlines()[0]}"


def _validate_against(schema: type, plain: dict, prefix: str, build: bool) -> None:
    try:
        merged = OmegaConf.merge(OmegaConf.structured(schema), plain)
        if build:
            OmegaConf.to_object(merged)  # runs the schemas' __post_init__ value checks
    except ConfigError as e:  # from a __post_init__, with OmegaConf's key/type lines appended
        raise ConfigError(str(e).splitlines()[0]) from None
    except (ValidationError, ConfigKeyError, ConfigAttributeError, ConfigTypeError, MissingMandatoryValue) as e:
        raise ConfigError(_message(e, schema, plain, prefix)) from None


def _omegaconf_type(annotation: Any) -> Any:
    """A signature's annotation as a type OmegaConf checks: scalars (null allowed: a loose ``x: int = None``
    is common), Any for everything else (the target checks those itself)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        annotation = rest[0] if len(rest) == 1 else Any
    # typing.Optional, not ``X | None``: OmegaConf's structured configs read typing's form
    return Optional[annotation] if annotation in (int, float, bool, str) else Any  # noqa: UP045


def target_schema(target: Any) -> tuple[type, bool]:
    """A dataclass with one field per parameter of ``target`` (typed where OmegaConf can check the type),
    and whether ``target`` takes extra keyword arguments."""
    fn = target if dataclasses.is_dataclass(target) or not inspect.isclass(target) else target.__init__
    try:
        hints = typing.get_type_hints(fn)
    except Exception:  # an annotation that cannot be evaluated: check the keys only
        hints = {}
    params = list(inspect.signature(target).parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    fields = [
        (p.name, _omegaconf_type(hints.get(p.name, Any)), dataclasses.field(default=MISSING))
        for p in params
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    ]
    name = getattr(target, "__name__", "target")
    return dataclasses.make_dataclass(name, fields), var_kw


def _check_targets(node: Any, path: str) -> None:
    """Every ``_target_`` node below ``node``: its keys are parameters of the target, of their types."""
    if isinstance(node, list):
        for i, item in enumerate(node):
            _check_targets(item, f"{path}[{i}]")
        return
    if not isinstance(node, dict):
        return
    for k, v in node.items():
        if k not in _HYDRA_KEYS:
            _check_targets(v, f"{path}.{k}" if path else str(k))
    if "_target_" not in node:
        return
    from hydra.utils import get_object

    try:
        target = get_object(str(node["_target_"]))
    except Exception as e:
        raise ConfigError(f"{path}._target_: {node['_target_']!r} cannot be imported ({e})") from None
    if not callable(target):
        raise ConfigError(f"{path}._target_: {node['_target_']!r} is not a class or function")
    schema, var_kw = target_schema(target)
    known = {f.name for f in dataclasses.fields(schema)}
    given = {k: v for k, v in node.items() if k not in _HYDRA_KEYS}
    unknown = sorted(set(given) - known)
    if unknown and not var_kw:
        raise ConfigError(
            f"{path}.{unknown[0]}: unknown key; {node['_target_']} takes {', '.join(sorted(known)) or 'no arguments'}"
        )
    # nested values are checked as their own nodes; keep only the scalars and lists here
    _validate_against(
        schema, {k: v for k, v in given.items() if k in known and not isinstance(v, dict)}, path, build=False
    )


def validate_config(cfg: DictConfig, schema: type) -> None:
    """Check the composed app config (the ``hydra`` node aside) against ``schema``; raise ``ConfigError``."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", "") or "config"
        raise ConfigError(f"{key}: {str(e).splitlines()[0]}") from None
    plain.pop("hydra", None)
    # nodes whose schema depends on another value (lxmert-finetune: data.<task name>, the task's splits_schema)
    schemas = schema.nested_schemas(plain) if hasattr(schema, "nested_schemas") else {}
    nested = [(key, sub, _pop(plain, key)) for key, sub in schemas.items()]
    _validate_against(schema, plain, "", build=True)
    for key, sub, node in nested:
        if node is not None:
            _validate_against(sub, node, key, build=True)
    _check_targets(plain, "")


def _pop(plain: dict, key: str) -> Any:
    """Remove the node at dotted ``key`` from ``plain`` and return it (None when absent)."""
    *parents, leaf = key.split(".")
    node = _lookup(plain, parents)
    return node.pop(leaf, None) if isinstance(node, dict) else None
