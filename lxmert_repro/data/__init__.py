"""Annotations -> examples -> masked, collated batches."""
from lxmert_repro.data.batch import LxmertBatch

__all__ = ["LxmertBatch"]
