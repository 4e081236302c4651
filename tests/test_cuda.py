"""On a CUDA device only (skipped elsewhere; `scripts/gpu_bench.sh` runs them first): the training forward
compiled by Inductor for CUDA as one graph under bf16 autocast, close to eager; bf16 training with fused AdamW
fits a fixed batch; the scoring path's unimodal cache equals the full forward. Model-level, no tokenizer or
vocabulary package needed (the device image has neither)."""

from __future__ import annotations

import pytest
import torch

from mmtlab.model import build_model, compile_fn
from mmtlab.train.losses import itm_loss, mlm_loss

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
FEAT = 32


def cuda_batch(B: int = 8, T: int = 12, R: int = 7, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, T, dtype=torch.bool)
    text_mask[0, 9:] = False
    mlm_mask = torch.rand(B, T, generator=g) < 0.2
    mlm_mask[:, 0] = False
    mlm_mask &= text_mask
    batch = {
        "text_ids": torch.randint(1000, 2000, (B, T), generator=g),
        "text_mask": text_mask,
        "img_feats": torch.randn(B, R, FEAT, generator=g),
        "img_boxes": torch.rand(B, R, 5, generator=g),
        "img_mask": torch.ones(B, R, dtype=torch.bool),
        "mlm_mask": mlm_mask,
        "itm_labels": torch.randint(0, 2, (B,), generator=g),
    }
    return {k: v.cuda() for k, v in batch.items()}


def loss_of(model):
    def loss(batch: dict) -> torch.Tensor:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(batch, full_states=False)
            return mlm_loss(out["mlm_logits"], batch["text_ids"][batch["mlm_mask"]]) + itm_loss(
                out, batch["itm_labels"]
            )

    return loss


@pytest.mark.parametrize("preset", ["single-stream", "mixed-modality"])
def test_compiled_training_forward_is_one_cuda_graph(preset):
    from torch._inductor.compile_fx import compile_fx

    torch.manual_seed(0)
    model = build_model(preset, "tiny", feat_dim=FEAT, dropout=0.0, attn_dropout=0.0).cuda()
    graphs = []

    def inductor(gm, example_inputs):
        graphs.append(gm)
        return compile_fx(gm, example_inputs)

    eager, compiled = loss_of(model), compile_fn(loss_of(model), backend=inductor)
    for seed in (0, 1):  # a different number of masked words: the same graph
        batch = cuda_batch(seed=seed)
        got, want = compiled(batch), eager(batch)
        torch.testing.assert_close(got, want, rtol=2e-2, atol=2e-2)
        got.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        model.zero_grad(set_to_none=True)
    assert len(graphs) == 1


def test_bf16_training_with_fused_adamw_fits_a_batch():
    torch.manual_seed(0)
    model = build_model("merged", "tiny", feat_dim=FEAT, schedule="MM").cuda().train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    batch, loss = cuda_batch(), loss_of(model)
    losses = []
    for _ in range(40):
        value = loss(batch)
        value.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(value.item())
    assert losses[-1] < 0.5 * losses[0], losses


def test_unimodal_cache_equals_full_forward_on_cuda():
    torch.manual_seed(0)
    model = build_model("mixed-modality", "tiny", feat_dim=FEAT).cuda().eval()
    batch = cuda_batch()
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
        full = model(batch)["itm_logits"].float()
        t = model.encode_text(batch["text_ids"], batch["text_mask"])
        v, v_mask = model.encode_image(batch)
        cached = model.match_logits(t, batch["text_mask"], v, v_mask).float()
    torch.testing.assert_close(cached, full, rtol=2e-2, atol=2e-2)
