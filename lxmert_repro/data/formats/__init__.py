"""Annotation formats -> ``Example`` (one internal schema)."""
from lxmert_repro.data.formats.coco_captions import read_coco_captions
from lxmert_repro.data.formats.easy_vqa import easy_vqa_image_dir, easy_vqa_root, read_easy_vqa
from lxmert_repro.data.formats.example import Example
from lxmert_repro.data.formats.gqa import read_gqa_questions, read_lxmert_gqa
from lxmert_repro.data.formats.lxmert_json import read_lxmert_pretrain, read_lxmert_vqa
from lxmert_repro.data.formats.nlvr2 import read_nlvr2
from lxmert_repro.data.formats.vqa_v2 import load_vqa_annotations, load_vqa_questions, read_vqa_v2

__all__ = ["Example", "easy_vqa_image_dir", "easy_vqa_root", "load_vqa_annotations", "load_vqa_questions",
           "read_coco_captions", "read_easy_vqa", "read_gqa_questions", "read_lxmert_gqa", "read_lxmert_pretrain",
           "read_lxmert_vqa", "read_nlvr2", "read_vqa_v2"]
