"""Annotations -> examples -> masked, collated batches.

Modules: ``formats`` (annotation files -> ``Example``), ``answers`` (normalisation, vocabularies, soft
scores), ``masking`` (LXMERT's MLM / object masking), ``pretrain_dataset`` and ``vqa_dataset`` (datasets
and collators producing ``LxmertBatch``), ``bucketing`` (length-grouped batches), ``prepare`` (the
``lxmert-prepare`` stage).
"""
from lxmert_repro.data.batch import LxmertBatch

__all__ = ["LxmertBatch"]
