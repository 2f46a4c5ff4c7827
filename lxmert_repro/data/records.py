"""Row access to prepared examples, fast and picklable.

Accepts a ``datasets.Dataset`` (the memory-mapped Arrow table ``lxmert-prepare`` saves), a list of
record dicts or a list of ``Example``. Arrow rows are read straight from the table's columns (much
faster per row than ``Dataset.__getitem__``); the column handles are rebuilt lazily after pickling, so
a DataLoader worker receives only the dataset's file reference, never its data.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from lxmert_repro.data.formats.example import Example


class RecordTable:
    def __init__(self, records: Any) -> None:
        try:
            import datasets
        except ImportError:  # pragma: no cover - datasets is a dependency
            datasets = None
        self._hf = None
        self._rows: list[dict[str, Any]] | None = None
        if datasets is not None and isinstance(records, datasets.Dataset):
            self._hf = records
        else:
            self._rows = [r.to_record() if isinstance(r, Example) else dict(r) for r in records]
        self._cols: dict[str, Any] | None = None
        self._map: np.ndarray | None = None  # row -> table row, after Dataset.select/shuffle

    def __len__(self) -> int:
        return len(self._hf) if self._hf is not None else len(self._rows)  # type: ignore[arg-type]

    @property
    def column_names(self) -> list[str]:
        if self._hf is not None:
            return list(self._hf.column_names)
        return list(self._rows[0]) if self._rows else []

    def _arrow_columns(self) -> dict[str, Any] | None:
        if self._cols is None and self._hf is not None:
            table = self._hf.data.table  # pyarrow.Table (memory-mapped)
            self._cols = {name: table.column(name) for name in table.column_names}
            indices = getattr(self._hf, "_indices", None)
            if indices is not None:  # a select()/shuffle() view: rows go through its index mapping
                self._map = np.asarray(indices.column(0).to_numpy(), np.int64)
        return self._cols

    def get(self, index: int, columns: Iterable[str] | None = None) -> dict[str, Any]:
        """Row ``index`` as a dict of Python values (only ``columns`` when given)."""
        if self._rows is not None:
            row = self._rows[index]
            return row if columns is None else {c: row[c] for c in columns}
        cols = self._arrow_columns()
        if cols is None:
            row = self._hf[int(index)]
            return row if columns is None else {c: row[c] for c in columns}
        names = cols.keys() if columns is None else columns
        row = int(index) if self._map is None else int(self._map[index])
        return {c: cols[c][row].as_py() for c in names}

    def column(self, name: str) -> list[Any]:
        if self._rows is not None:
            return [r[name] for r in self._rows]
        return list(self._hf[name])

    def image_codes(self) -> np.ndarray:
        """(len,) int64 code per row; rows of the same image share a code."""
        if self._hf is not None and self._arrow_columns() is not None:
            enc = self._cols["image_id"].combine_chunks().dictionary_encode()
            codes = np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)
            return codes if self._map is None else codes[self._map]
        _, codes = np.unique(np.asarray(self.column("image_id"), dtype=object).astype(str), return_inverse=True)
        return codes.astype(np.int64)

    def text_lengths(self) -> np.ndarray:
        """(len,) number of token ids per row (for length bucketing)."""
        if self._hf is not None and self._arrow_columns() is not None:
            import pyarrow.compute as pc

            lengths = np.asarray(pc.list_value_length(self._cols["input_ids"]).to_numpy(), np.int64)
            return lengths if self._map is None else lengths[self._map]
        return np.fromiter((len(x) for x in self.column("input_ids")), np.int64, len(self))

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cols"], state["_map"] = None, None
        return state
