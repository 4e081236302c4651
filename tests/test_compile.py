"""torch.compile of the training forward (mmtlab.model.compile): one graph whatever the masks select, the same
values as eager, and a compiled ``mmtlab train`` following the eager loss curve."""

from __future__ import annotations

import json

import pytest
import torch
from torch._dynamo.utils import counters

from mmtlab.model import build_model, compile_fn
from mmtlab.train import train
from mmtlab.train.losses import itm_loss, mlm_loss, mrm_kl_loss
from test_train import make_store, tiny_cfg

FEAT = 24


def batch_with_masks(n_mlm: int, B: int = 3, T: int = 9, R: int = 6) -> dict:
    g = torch.Generator().manual_seed(n_mlm)
    text_mask = torch.ones(B, T, dtype=torch.bool)
    text_mask[0, 6:] = False  # padding
    mlm_mask = torch.zeros(B, T, dtype=torch.bool)
    mlm_mask[1, 1 : 1 + n_mlm] = True
    mrm_mask = torch.zeros(B, R, dtype=torch.bool)
    mrm_mask[:, 2] = True
    cls = torch.rand(B, R, 5, generator=g)
    return {
        "text_ids": torch.randint(1000, 2000, (B, T), generator=g),
        "text_mask": text_mask,
        "img_feats": torch.randn(B, R, FEAT, generator=g),
        "img_boxes": torch.rand(B, R, 5, generator=g),
        "img_mask": torch.ones(B, R, dtype=torch.bool),
        "mlm_mask": mlm_mask,
        "mrm_mask": mrm_mask,
        "itm_labels": torch.tensor([1, 0, 1]),
        "img_cls": cls,
    }


@pytest.mark.parametrize(
    "preset", ["merged", "single-stream", "mixed-modality", "coattention", "single-modality-hloss"]
)
def test_training_forward_is_one_graph_for_any_mask_count(preset):
    """The masked-position gathers and the last layer's kept rows (data-dependent sizes) stay inside the graph:
    one graph, reused when the number of masked words changes, with the eager values."""
    torch.manual_seed(0)
    model = build_model(preset, "tiny", feat_dim=FEAT, n_region_classes=5, dropout=0.0, attn_dropout=0.0)

    def loss(batch: dict) -> torch.Tensor:
        out = model(batch, full_states=False)
        return (
            mlm_loss(out["mlm_logits"], batch["text_ids"][batch["mlm_mask"]])
            + itm_loss(out, batch["itm_labels"])
            + mrm_kl_loss(out["mrm_logits"], batch["img_cls"][batch["mrm_mask"]])
        )

    graphs = []

    def count(gm: torch.fx.GraphModule, example_inputs):
        graphs.append(gm)
        return gm.forward

    compiled = compile_fn(loss, backend=count)
    for n_mlm in (2, 4, 0):
        batch = batch_with_masks(n_mlm)
        torch.testing.assert_close(compiled(batch), loss(batch), rtol=1e-5, atol=1e-6)
    assert len(graphs) == 1


def test_compiled_training_follows_the_eager_loss_curve(tmp_path):
    """``train.compile=true`` (Inductor) on a tiny model without dropout: the same losses step by step as eager
    (the masking and the losses run eagerly, so both runs see the same masks)."""
    store = make_store(tmp_path / "coco", n=40, feat_dim=FEAT)
    curves, graphs = {}, {}
    for compiled in ("false", "true"):
        counters.clear()
        cfg = tiny_cfg(
            store,
            "vilbert-1block",  # one layer: Inductor's cold compile (every CI run) is what this test costs
            **{
                "train.steps": "3",
                "train.batch_size": "8",
                "train.log_every": "1",
                "train.compile": compiled,
                "model.dropout": "0",
                "model.attn_dropout": "0",
            },
        )
        run = train(cfg, tmp_path / f"run-{compiled}")
        lines = [json.loads(ln) for ln in (run / "metrics.jsonl").read_text().splitlines()]
        curves[compiled] = [ln["loss"] for ln in lines if "loss" in ln]
        graphs[compiled] = counters["stats"]["unique_graphs"]
    assert graphs == {"false": 0, "true": graphs["true"]} and graphs["true"] >= 1  # it did compile
    assert len(curves["true"]) == 3
    assert curves["true"] == pytest.approx(curves["false"], rel=1e-4)


def test_compile_falls_back_to_graph_breaks_when_capturing_fails():
    """A backend that cannot compile the in-graph data-dependent sizes: one warning, then graphs split at them
    (more than one graph), with the same values."""
    import torch._dynamo.config

    def fragile(gm: torch.fx.GraphModule, example_inputs):
        if torch._dynamo.config.capture_dynamic_output_shape_ops:
            raise RuntimeError("no code for unbacked sizes here")
        graphs.append(gm)
        return gm.forward

    graphs = []

    def pick(x: torch.Tensor) -> torch.Tensor:
        return (x[x > 0] * 2).sum() + x.mean()

    compiled = compile_fn(pick, backend=fragile)
    x = torch.tensor([1.0, -2.0, 3.0])
    with pytest.warns(UserWarning, match="compiling with graph breaks"):
        assert compiled(x) == pick(x)
    assert compiled(x * 2) == pick(x * 2) and len(graphs) >= 2
