"""Pretraining objectives: which losses a run optimises, their weights and denominators.

Separate from the architecture config so one objective setting applies to every model that has the
objective: a pretraining model class states the objectives it has (``SUPPORTED_OBJECTIVES``) and builds
heads only for the requested ones it supports. Defaults are LXMERT's (docs/faithful.md §4): every task on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

VISUAL_LOSS_DENOMINATORS = ("all_boxes", "masked_boxes")
# Objective names, as loss keys: masked LM, image-text matching, masked-object label / attribute
# classification and feature regression (LXMERT), pretraining image QA (LXMERT), masked-region
# classification with KL to the detector's class distribution (ViLBERT).
OBJECTIVES = ("mlm", "itm", "obj", "attr", "feat", "qa", "region_kl")


@dataclass
class PretrainObjectives:
    task_mask_lm: bool = True  # masked LM (paper sec. 3.1.1)
    task_matched: bool = True  # image-text matching (ITM, paper sec. 3.1.3)
    task_obj_predict: bool = True  # masked-object prediction (paper sec. 3.1.2): obj / attr / feat below
    task_qa: bool = True  # image QA; public code: on all 20 epochs (paper: last 10)
    visual_obj_loss: bool = True
    visual_attr_loss: bool = True
    visual_feat_loss: bool = True
    task_region_kl: bool = True  # ViLBERT: masked regions' class distribution, KL to the detector's
    mlm_loss_weight: float = 1.0
    itm_loss_weight: float = 1.0
    qa_loss_weight: float = 1.0
    region_kl_loss_weight: float = 1.0
    visual_loss_normalizer: float = 1 / 0.15  # public LXMERT code: 1/0.15 on obj, attr, feat (transformers: 6.67)
    # Alternatives (not LXMERT's choice): obj/attr CE only on masked boxes; divide visual losses by
    # the number of masked boxes instead of all real boxes.
    obj_attr_masked_only: bool = False
    visual_loss_denominator: str = "all_boxes"

    def __post_init__(self) -> None:
        if self.visual_loss_denominator not in VISUAL_LOSS_DENOMINATORS:
            raise ValueError(
                f"objectives: visual_loss_denominator must be one of {VISUAL_LOSS_DENOMINATORS}, "
                f"got {self.visual_loss_denominator!r}"
            )

    def requested(self) -> set[str]:
        """The objective names switched on."""
        visual = self.task_obj_predict
        on = {
            "mlm": self.task_mask_lm,
            "itm": self.task_matched,
            "qa": self.task_qa,
            "obj": visual and self.visual_obj_loss,
            "attr": visual and self.visual_attr_loss,
            "feat": visual and self.visual_feat_loss,
            "region_kl": self.task_region_kl,
        }
        return {name for name, flag in on.items() if flag}

    def restricted_to(self, supported: Iterable[str], model_name: str) -> PretrainObjectives:
        """These objectives with the ones ``model_name`` does not have switched off (logged once, by name)."""
        supported = set(supported)
        dropped = sorted(self.requested() - supported)
        if dropped:
            log.info("%s has no %s objective(s): not trained (it has %s)", model_name, dropped, sorted(supported))
        off: dict[str, Any] = {}
        if "mlm" not in supported:
            off["task_mask_lm"] = False
        if "itm" not in supported:
            off["task_matched"] = False
        if "qa" not in supported:
            off["task_qa"] = False
        if "region_kl" not in supported:
            off["task_region_kl"] = False
        for name in ("obj", "attr", "feat"):
            if name not in supported:
                off[f"visual_{name}_loss"] = False
        if not any(n in supported for n in ("obj", "attr", "feat")):
            off["task_obj_predict"] = False
        return self.replace(**off) if off else self

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> PretrainObjectives:
        return dataclasses.replace(self, **changes)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "objectives") -> PretrainObjectives:
        names = objective_field_names()
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"{source}: unknown objective field(s) {unknown}; expected some of {sorted(names)}")
        return cls(**values)


def objective_field_names() -> set[str]:
    return {f.name for f in dataclasses.fields(PretrainObjectives)}


def split_objectives(values: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A dict that mixes architecture and objective fields (our format version 1, transformers' LxmertConfig)
    -> (architecture fields, objective fields)."""
    names = objective_field_names()
    arch = {k: v for k, v in values.items() if k not in names}
    objectives = {k: v for k, v in values.items() if k in names}
    return arch, objectives
