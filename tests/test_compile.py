"""The models trace as ONE torch.compile graph: no host read-backs, no data-dependent shapes.

That is what CUDA graphs (``trainer.compile.mode=reduce-overhead``) need, and what keeps a GPU's launch
queue full in eager mode. Dynamo's tracing is checked with ``fullgraph=True`` (any graph break raises);
the ``aot_eager`` backend also traces the backward, without code generation, so these tests run in
seconds on a CPU. Compiled and eager results must agree.
"""

from __future__ import annotations

import pytest
import torch
from model_helpers import make_batch, tiny_config

from lxmert_repro.modeling import LxmertForPreTraining, LxmertForVQA


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _graphs(model: torch.nn.Module, **batch) -> tuple[int, int]:
    e = torch._dynamo.explain(model)(**batch)
    return e.graph_count, e.graph_break_count


def test_pretraining_dense_predictions_is_one_graph_with_padding_in_both_streams():
    cfg = tiny_config(sparse_predictions=False)
    model = LxmertForPreTraining(cfg).eval()
    batch = make_batch(cfg, b=4, pad_text=True, pad_boxes=True)
    assert _graphs(model, **batch) == (1, 0)
    # a batch without masked tokens or QA answers: the losses stay defined without reading the labels back
    empty = dict(
        batch,
        mlm_labels=torch.full_like(batch["mlm_labels"], -100),
        qa_labels=torch.full_like(batch["qa_labels"], -100),
    )
    out = torch.compile(model, fullgraph=True, backend="eager")(**empty)
    assert out.losses["mlm"].item() == 0.0 and out.losses["qa"].item() == 0.0


def test_sparse_predictions_break_the_graph_only_at_the_gathers():
    """The default (logits only at masked positions) has data-dependent shapes: documented graph breaks."""
    cfg = tiny_config(sparse_predictions=True)
    graphs, breaks = _graphs(LxmertForPreTraining(cfg).eval(), **make_batch(cfg, b=4))
    assert breaks > 0 and graphs == breaks + 1


def test_compiled_training_step_matches_eager():
    """Forward and backward traced by AOT autograd (fullgraph): same losses and gradients as eager."""
    cfg = tiny_config(sparse_predictions=False, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    torch.manual_seed(0)
    eager = LxmertForPreTraining(cfg).train()
    traced = LxmertForPreTraining(cfg).train()
    traced.load_state_dict(eager.state_dict())
    batch = make_batch(cfg, b=4, pad_text=True, pad_boxes=True)

    out_e = eager(**batch)
    out_e.loss.backward()
    out_c = torch.compile(traced, fullgraph=True, backend="aot_eager")(**batch)
    out_c.loss.backward()

    for name in out_e.losses:
        torch.testing.assert_close(out_c.losses[name], out_e.losses[name], rtol=1e-5, atol=1e-6)
    grads_e = dict(eager.named_parameters())
    for name, p in traced.named_parameters():
        ref = grads_e[name].grad
        if ref is None:
            assert p.grad is None, name
            continue
        torch.testing.assert_close(p.grad, ref, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_vqa_model_is_one_graph():
    cfg = tiny_config()
    model = LxmertForVQA(cfg, num_answers=5).eval()
    b = make_batch(cfg, b=4, pad_text=True, pad_boxes=True)
    targets = torch.rand(4, 5)
    assert _graphs(
        model,
        input_ids=b["input_ids"],
        attention_mask=b["attention_mask"],
        visual_feats=b["visual_feats"],
        visual_boxes=b["visual_boxes"],
        visual_mask=b["visual_mask"],
        vqa_targets=targets,
    ) == (1, 0)
