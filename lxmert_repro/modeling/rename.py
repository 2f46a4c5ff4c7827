"""State-dict renaming between our parameter names and a reference repository's, for any architecture.

An architecture gives ``to_reference(our_key) -> reference key`` (one to one) and the reference's tied
duplicates (a key the reference stores that must equal another: e.g. an MLM decoder tied to the word
embeddings). Import walks our model's keys (built on the meta device, no memory), so every reference
tensor is either consumed, a checked duplicate, or returned as unused (strict loading then names it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

from .convert import CheckpointError


def import_state(
    ref_state: Mapping[str, torch.Tensor],
    our_keys: Iterable[str],
    to_reference: Callable[[str], str],
    tied: Mapping[str, str] | None = None,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Reference tensors -> our names. Returns (our state, reference keys nobody consumed)."""
    ours: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    for key in our_keys:
        ref = to_reference(key)
        if ref in ref_state:
            ours[key] = ref_state[ref]
            used.add(ref)
    for dup, src in (tied or {}).items():
        if dup in ref_state:
            used.add(dup)
            other = ref_state.get(src)
            if other is not None and (other.shape != ref_state[dup].shape or not torch.equal(other, ref_state[dup])):
                raise CheckpointError(f"{dup} differs from {src}: they must be tied (the same tensor)")
    return ours, sorted(k for k in ref_state if k not in used)


def export_state(
    state: Mapping[str, torch.Tensor],
    to_reference: Callable[[str], str],
    tied: Mapping[str, str] | None = None,
) -> dict[str, torch.Tensor]:
    """Our tensors -> reference names, with the tied duplicates the reference stores written too."""
    out = {to_reference(k): v.detach().cpu().contiguous() for k, v in state.items()}
    for dup, src in (tied or {}).items():
        if src in out:
            out[dup] = out[src]
    return out


def prefix_table(key: str, table: list[tuple[str, str]], what: str) -> str:
    """Replace the first matching prefix of ``key`` (our prefix -> reference prefix)."""
    for ours, ref in table:
        if key.startswith(ours):
            return ref + key[len(ours) :]
    raise KeyError(f"no reference name for {what} parameter {key!r}")


def our_key_names(model_class: type, *args) -> list[str]:
    """Every state-dict key of ``model_class(*args)``, built on the meta device (no memory, no init cost)."""
    with torch.device("meta"):
        return list(model_class(*args).state_dict().keys())
