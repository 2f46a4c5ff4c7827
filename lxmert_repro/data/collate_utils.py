"""Shared pieces of collation: batch buffers (in shared memory inside DataLoader workers) and padding."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch.utils.data import get_worker_info


def alloc(shape: tuple[int, ...], dtype: torch.dtype, fill: float | int | None = 0) -> torch.Tensor:
    """A tensor to fill in place. Inside a DataLoader worker it is created in shared memory, as
    torch's default_collate does, so sending the batch to the main process copies nothing."""
    if get_worker_info() is not None:
        numel = int(np.prod(shape))
        storage = torch.empty(0, dtype=dtype)._typed_storage()._new_shared(numel)
        t = torch.empty(0, dtype=dtype).new(storage).view(shape)
    else:
        t = torch.empty(shape, dtype=dtype)
    if fill is not None:
        t.fill_(fill)
    return t


def pad_text(seqs: Sequence[np.ndarray], pad_id: int, pad_to: int | None = None,
             label_seqs: Sequence[np.ndarray] | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(B, T) input ids padded with ``pad_id``, attention mask, zero token types, and padded labels (-100)."""
    lengths = np.fromiter((len(s) for s in seqs), np.int64, len(seqs))
    T = int(lengths.max()) if pad_to is None else int(pad_to)
    if lengths.max() > T:
        raise ValueError(f"a sentence has {int(lengths.max())} tokens, more than pad_to={T}")
    B = len(seqs)
    ids = np.full((B, T), pad_id, np.int64)
    mask = (np.arange(T)[None, :] < lengths[:, None])
    ids[mask] = np.concatenate(seqs) if B else []
    labels = None
    if label_seqs is not None:
        lab = np.full((B, T), -100, np.int64)
        lab[mask] = np.concatenate(label_seqs)
        labels = torch.from_numpy(lab)
    return torch.from_numpy(ids), torch.from_numpy(mask.astype(np.int64)), torch.zeros((B, T), dtype=torch.long), labels


def feature_dtype(name: str | None, example: np.ndarray) -> torch.dtype:
    """Batch dtype for region features: ``name`` ("float32"/"float16"), or the store's when None."""
    if name is None:
        return torch.from_numpy(example[:0]).dtype
    if name not in ("float32", "float16", "bfloat16"):
        raise ValueError(f"feat_dtype must be float32, float16, bfloat16 or null, got {name!r}")
    return getattr(torch, name)


def copy_rows(dst: torch.Tensor, src: np.ndarray, n: int) -> None:
    """dst[:n] = src (converted to dst's dtype), dst[n:] = 0. Same dtype: a plain numpy copy (no thread
    pool); otherwise torch's vectorised conversion (numpy's float16 -> float32 is ~10x slower)."""
    if n:
        if torch.from_numpy(src[:0]).dtype == dst.dtype:
            dst[:n].numpy()[...] = src
        else:
            dst[:n].copy_(torch.from_numpy(src))
    if n < dst.shape[0]:
        dst[n:].zero_()


def padded_box_count(counts: np.ndarray, image_ids: Sequence[str], max_boxes: int | None) -> int:
    """N of the batch: the largest box count, or ``max_boxes`` (fixed padding, e.g. 36)."""
    if max_boxes is None:
        return int(counts.max())
    if counts.max() > max_boxes:
        i = int(counts.argmax())
        raise ValueError(f"image {image_ids[i]!r} has {int(counts[i])} boxes, more than the collator's max_boxes="
                         f"{max_boxes} (give the dataset the same max_boxes to keep the first boxes)")
    return int(max_boxes)
