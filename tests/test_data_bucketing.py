"""Length bucketing: every index once, reproducible per epoch, tighter lengths than random batches."""

import datasets
import numpy as np
import pytest

from lxmert_repro.data.bucketing import LengthBucketBatchSampler
from lxmert_repro.data.records import RecordTable


def test_bucketing_covers_everything_and_groups_lengths():
    lengths = np.random.default_rng(0).integers(3, 21, 1000)
    s = LengthBucketBatchSampler(lengths, 32, window_batches=10, seed=1)
    batches = list(s)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(1000)) and len(batches) == len(s) == 32
    spread = np.mean([np.ptp(lengths[b]) for b in batches])
    random_spread = np.mean(
        [np.ptp(lengths[b]) for b in np.array_split(np.random.default_rng(2).permutation(1000), 32)]
    )
    assert spread < 0.25 * random_spread
    assert [list(b) for b in s] == [list(b) for b in batches]  # same epoch -> same batches
    s.set_epoch(1)
    assert [list(b) for b in s] != [list(b) for b in batches]


def test_bucketing_replicas_split_batches():
    lengths = np.arange(100)
    parts = [list(LengthBucketBatchSampler(lengths, 8, seed=0, num_replicas=2, rank=r, drop_last=True)) for r in (0, 1)]
    assert len(parts[0]) == len(parts[1]) == 6
    assert not set(np.concatenate(parts[0])) & set(np.concatenate(parts[1]))


@pytest.mark.parametrize("view", [False, True])
def test_record_text_lengths(tmp_path, view):
    rows = {"image_id": ["a", "b", "c"], "input_ids": [[1, 2], [1, 2, 3, 4], [5]]}
    datasets.Dataset.from_dict(rows).save_to_disk(str(tmp_path / "d"))
    ds = datasets.load_from_disk(str(tmp_path / "d"))
    if view:
        ds = ds.select([2, 0])
        assert RecordTable(ds).text_lengths().tolist() == [1, 2]
        assert RecordTable(ds).get(0)["input_ids"] == [5]
    else:
        assert RecordTable(ds).text_lengths().tolist() == [2, 4, 1]
