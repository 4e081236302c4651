"""The specialised code paths added for speed (docs/performance.md) compute exactly what the general path does."""

import pytest
import torch

import mmtlab
from mmtlab.model.layers import BLOCKS, Layer, block_mask
from mmtlab.presets import model_config


def _streams(B=3, T=7, R=5, D=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, T, dtype=torch.bool)
    img_mask = torch.ones(B, R, dtype=torch.bool)
    text_mask[0, -2:] = False  # padding in both streams
    img_mask[1, -1:] = False
    return torch.randn(B, T, D, generator=g), torch.randn(B, R, D, generator=g), text_mask, img_mask


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("code", list(BLOCKS))
def test_first_only_equals_the_first_rows_of_the_full_layer(code, shared):
    torch.manual_seed(0)
    layer = Layer(model_config("merged", "tiny", schedule=code, shared=shared), code).eval()
    t, v, tm, vm = _streams()
    mask = block_mask(code, tm, vm)
    with torch.no_grad():
        full_t, full_v = layer(t, v, mask)
        t0, v0 = layer(t, v, mask, first_only=True)
    assert t0.shape == (3, 1, 128) and v0.shape == (3, 1, 128)
    torch.testing.assert_close(t0, full_t[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v0, full_v[:, :1], atol=1e-5, rtol=1e-5)


def test_shared_layer_as_one_sequence_equals_per_stream_weights():
    """A single-stream layer (one [T; V] sequence) equals a two-stream layer whose streams hold the same weights."""
    torch.manual_seed(0)
    shared = Layer(model_config("merged", "tiny", schedule="M", shared=True), "M").eval()
    two = Layer(model_config("merged", "tiny", schedule="M", shared=False), "M").eval()
    for s in two.streams:
        s.load_state_dict(shared.streams[0].state_dict())
    t, v, tm, vm = _streams()
    mask = block_mask("M", tm, vm)
    with torch.no_grad():
        for a, b in zip(shared(t, v, mask), two(t, v, mask)):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("schedule, shared", [("MMMM", True), ("UUCC", False), ("UUUU", False), ("ULIM", False)])
def test_match_logits_equal_the_full_forward(schedule, shared):
    torch.manual_seed(0)
    model = mmtlab.build_model("merged", "tiny", schedule=schedule, shared=shared, feat_dim=32).eval()
    t, v, tm, vm = _streams(D=128)
    g = torch.Generator().manual_seed(1)
    batch = {
        "text_ids": torch.randint(1000, 2000, tm.shape, generator=g),
        "text_mask": tm,
        "img_feats": torch.randn(*vm.shape, 32, generator=g),
        "img_boxes": torch.rand(*vm.shape, 5, generator=g),
        "img_mask": vm,
    }
    with torch.no_grad():
        ref = model(batch)["itm_logits"]
        ts = model.encode_text(batch["text_ids"], tm)
        vs, vmask = model.encode_image(batch)
        torch.testing.assert_close(model.match_logits(ts, tm, vs, vmask), ref, atol=1e-5, rtol=1e-5)
