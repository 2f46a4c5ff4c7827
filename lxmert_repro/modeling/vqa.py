"""LxmertForVQA: encoder + answer head over the task's answers, soft-target BCE x num_answers (docs/faithful.md §6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from .base import VQAModel, model_output
from .config import LxmertConfig
from .encoder import EncoderAttentions
from .heads import AnswerHead

ANSWER_HEAD_KEYS = ("dense.weight", "dense.bias", "layer_norm.weight", "layer_norm.bias")


@model_output
class LxmertVQAOutput:
    logits: torch.Tensor  # (B, A)
    loss: torch.Tensor | None = None
    language_output: torch.Tensor | None = None
    vision_output: torch.Tensor | None = None
    pooled_output: torch.Tensor | None = None
    attentions: EncoderAttentions | None = None

    @property
    def cross_attentions(self) -> tuple[torch.Tensor, ...] | None:
        return None if self.attentions is None else self.attentions.cross_lang_to_visn


class LxmertForVQA(VQAModel):
    output_class = LxmertVQAOutput

    def __init__(self, config: LxmertConfig, num_answers: int) -> None:
        super().__init__(config, num_answers)  # the encoder, as self.lxmert
        self.answer_head = AnswerHead(config, num_answers)
        self.init_weights()

    @property
    def num_answers(self) -> int:
        return self.answer_head.num_answers

    def answer_logits(self, enc: Any, attention_mask: torch.Tensor | None) -> torch.Tensor:
        return self.answer_head(enc.pooled_output)

    @torch.no_grad()
    def init_answer_head_from(
        self,
        pretrain_model_or_state: torch.nn.Module | Mapping[str, torch.Tensor],
        pretrain_answers: Sequence[str],
        task_answers: Sequence[str],
    ) -> int:
        """Copy the pretraining QA head; classifier rows matched by answer string, unmatched rows zero.

        ``pretrain_model_or_state``: an LxmertForPreTraining, its AnswerHead, or a state dict with our key
        names (``answer_head.*`` or the head's own keys). Returns the number of matched answers.
        """
        state = _answer_head_state(pretrain_model_or_state)
        if len(task_answers) != self.num_answers:
            raise ValueError(f"task_answers has {len(task_answers)} entries, the head has {self.num_answers}")
        w, b = state["classifier.weight"], state["classifier.bias"]
        if w.shape[0] != len(pretrain_answers):
            raise ValueError(
                f"pretrain_answers has {len(pretrain_answers)} entries, the pretraining head has {w.shape[0]} rows"
            )
        head = self.answer_head
        for key in ANSWER_HEAD_KEYS:
            target = head.get_parameter(key)
            if target.shape != state[key].shape:
                raise ValueError(f"answer_head.{key}: shape {tuple(state[key].shape)}, expected {tuple(target.shape)}")
            target.copy_(state[key])
        index = {a: i for i, a in enumerate(pretrain_answers)}
        head.classifier.weight.zero_()
        head.classifier.bias.zero_()
        matched = 0
        for j, answer in enumerate(task_answers):
            i = index.get(answer)
            if i is not None:
                head.classifier.weight[j] = w[i]
                head.classifier.bias[j] = b[i]
                matched += 1
        return matched

    @classmethod
    def from_pretraining(
        cls,
        pretrained: torch.nn.Module,
        num_answers: int,
        pretrain_answers: Sequence[str] | None = None,
        task_answers: Sequence[str] | None = None,
    ) -> LxmertForVQA:
        """A VQA model with the encoder of ``pretrained``; the answer head from its QA head when answers are given."""
        model = super().from_pretraining(pretrained, num_answers)
        if pretrain_answers is not None and task_answers is not None:
            model.init_answer_head_from(pretrained, pretrain_answers, task_answers)
        return model


def _answer_head_state(src: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if isinstance(src, AnswerHead):
        return dict(src.state_dict())
    if isinstance(src, torch.nn.Module):
        head = getattr(src, "answer_head", None)
        if head is None:
            raise ValueError(f"{type(src).__name__} has no answer_head (pretrained with task_qa=False?)")
        return dict(head.state_dict())
    state = {k[len("answer_head.") :]: v for k, v in src.items() if k.startswith("answer_head.")} or dict(src)
    missing = [k for k in (*ANSWER_HEAD_KEYS, "classifier.weight", "classifier.bias") if k not in state]
    if missing:
        raise KeyError(f"pretraining state has no answer head keys {missing}")
    return state
