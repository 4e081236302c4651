"""The model family: every preset runs and learns, every layer code routes information as docs/design.md, "Layer
codes", says."""

from __future__ import annotations

import pytest
import torch

import mmtlab
from mmtlab.model.heads import match_score
from mmtlab.model.layers import BLOCKS, image_sees_text, text_sees_image

FEAT = 32


def make_batch(B=3, T=9, R=6, feat=FEAT, seed=0, pad=True):
    g = torch.Generator().manual_seed(seed)
    text_mask = torch.ones(B, T, dtype=torch.bool)
    img_mask = torch.ones(B, R, dtype=torch.bool)
    if pad:
        text_mask[0, T - 3 :] = False
        img_mask[1, R - 2 :] = False
    ids = torch.randint(1000, 30000, (B, T), generator=g)
    ids[:, 0] = 101
    return {
        "text_ids": ids,
        "text_mask": text_mask,
        "img_feats": torch.randn(B, R, feat, generator=g),
        "img_boxes": torch.rand(B, R, 5, generator=g),
        "img_mask": img_mask,
    }


def tiny(preset="merged", **kw):
    kw.setdefault("feat_dim", FEAT)
    kw.setdefault("dropout", 0.0)
    kw.setdefault("attn_dropout", 0.0)
    torch.manual_seed(0)
    return mmtlab.build_model(preset, scale="tiny", **kw).eval()


# ----------------------------------------------------------------------------------------------- presets
PRE_LN = [
    ("merged", {"norm_first": True}),
    ("single-modality-hloss", {"norm_first": True}),
    ("single-stream", {"norm_first": True}),
]
WORDS = [0, 100, 101, 102, 103, *range(1000, 30000, 50)]  # a compact vocabulary (model.vocab_ids)


@pytest.mark.parametrize(
    "preset, options", [(p, {}) for p in mmtlab.list_presets()] + PRE_LN + [("merged", {"vocab_ids": WORDS})]
)
def test_preset_forward_backward_reaches_every_parameter(preset, options):
    torch.manual_seed(0)
    model = mmtlab.build_model(preset, scale="tiny", feat_dim=FEAT, **options).train()
    batch = make_batch()
    batch["mlm_mask"] = batch["text_mask"] & (torch.rand(batch["text_mask"].shape) < 0.5)
    batch["mlm_mask"][:, 1] = True
    batch["mrm_mask"] = batch["img_mask"].clone()
    batch["mrm_mask"][:, 0] = False
    batch["img_feats"][:, 1] = 0.0  # region 1 masked as MRM masks it (features zeroed)
    out = model(batch)
    B, T = batch["text_ids"].shape
    R, D = batch["img_feats"].shape[1], model.config.width
    assert out["text_states"].shape == (B, T, D)
    assert out["img_states"].shape == (B, R, D)
    assert out["itm_logits"].shape == (B, 2)
    assert out["mlm_logits"].shape == (int(batch["mlm_mask"].sum()), model.config.n_words)
    assert out["mrm_logits"].shape == (int(batch["mrm_mask"].sum()), model.config.n_region_classes)
    assert out["mrm_feats"].shape == (int(batch["mrm_mask"].sum()), FEAT)
    if model.config.itm_every_layer:
        assert out["itm_logits_per_layer"].shape == (model.config.layers, B, 2)
    loss = sum(v.float().sum() * 1e-3 for v in out.values())
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{preset}: no gradient reaches {name}"
        assert torch.isfinite(p.grad).all(), f"{preset}: non-finite gradient in {name}"
        assert p.grad.abs().sum() > 0, f"{preset}: zero gradient in {name}"


def test_zeroed_region_gets_the_mask_embedding_and_a_well_conditioned_gradient():
    """A masked region (features zeroed) is embedded as the learned mask vector + its box embedding, and
    its gradient into the feature projection is no larger than a real region's. (Before the mask vector,
    LayerNorm(Linear(0)) = LayerNorm(bias) gave feat.bias gradients ~1e4 x larger, which global clipping
    turned into a frozen model.)"""
    model = tiny()
    emb = model.image_embed
    batch = make_batch(pad=False)
    zeroed = dict(batch, img_feats=batch["img_feats"].clone())
    zeroed["img_feats"][:, 1] = 0.0
    feat_term = emb(zeroed["img_feats"], zeroed["img_boxes"]) - emb.box_norm(emb.box(zeroed["img_boxes"]))
    torch.testing.assert_close(feat_term[:, 1], emb.mask.expand(3, -1))
    torch.testing.assert_close(feat_term[:, 2], emb.feat_norm(emb.feat(batch["img_feats"][:, 2])))

    def bias_grad(b):
        model.zero_grad()
        model(b)["itm_logits"][:, 1].sum().backward()
        return emb.feat.bias.grad.norm().item()

    assert bias_grad(zeroed) < 10 * bias_grad(batch)


@pytest.mark.parametrize("preset", mmtlab.list_presets())
def test_preset_builds_at_paper_scale(preset):
    from mmtlab.presets import model_config

    cfg = model_config(preset, "paper")
    with torch.device("meta"):
        model = mmtlab.model.MultimodalTransformer(cfg)
    assert model.config.schedule == cfg.schedule and model.config.width == cfg.width
    assert cfg.width % cfg.heads == 0


def test_preset_shapes_match_the_paper():
    from mmtlab.presets import model_config

    base = model_config("merged")
    assert (base.schedule, base.width, base.heads, base.ffn) == ("MMMMMM", 768, 12, 3072)
    assert [model_config(f"vilbert-{n}block").layers for n in (1, 2, 4, 12)] == [1, 2, 4, 12]
    for name, heads, head_width in [
        ("heads1-768", 1, 768),
        ("heads3-256", 3, 256),
        ("heads6-64", 6, 64),
        ("heads18-64", 18, 64),
    ]:
        cfg = model_config(name)
        assert (cfg.heads, cfg.head_dim) == (heads, head_width)
    assert model_config("single-modality").schedule == "UUUUUU" and not model_config("single-modality").hloss
    assert model_config("single-modality-hloss").hloss
    assert model_config("mixed-modality").schedule == "UUUUUM"
    assert model_config("single-stream").shared
    assert [model_config(f"language-q-{h}").heads for h in (12, 24)] == [12, 24]
    assert model_config("image-q-24").schedule == "IIIIII"
    assert model_config("coattention").schedule == "CCCCCC"
    assert model_config("baseline").is_dual
    # tiny keeps schedules and ratios
    assert model_config("language-q-24", "tiny").heads == 2 * model_config("language-q-12", "tiny").heads
    assert model_config("vilbert-12block", "tiny").schedule == "M" * 12


def test_parameter_counts():
    merged, single = tiny("merged"), tiny("single-stream")
    ratio = single.num_parameters(layers_only=True) / merged.num_parameters(layers_only=True)
    assert abs(ratio - 0.5) < 0.01
    narrow = tiny("heads6-64")
    assert narrow.config.width < merged.config.width
    assert narrow.num_parameters() < merged.num_parameters()


# ----------------------------------------------------------------------------------------------- information flow
def _states(model, batch):
    with torch.no_grad():
        out = model(batch)
    return out["text_states"], out["img_states"]


def _changed(a, b, mask):
    return (a - b)[mask].abs().max().item() > 1e-5


def _flow(model):
    """(text depends on image, image depends on text) measured on real tokens."""
    batch = make_batch()
    t0, v0 = _states(model, batch)
    other_img = dict(batch, img_feats=batch["img_feats"] + torch.randn_like(batch["img_feats"]))
    t1, v1 = _states(model, other_img)
    assert _changed(v0, v1, batch["img_mask"]), "image states must depend on the image"
    other_txt = dict(
        batch, text_ids=torch.where(batch["text_mask"], (batch["text_ids"] + 7) % 30000, batch["text_ids"])
    )
    other_txt["text_ids"][:, 0] = 101
    t2, v2 = _states(model, other_txt)
    assert _changed(t0, t2, batch["text_mask"]), "text states must depend on the text"
    return _changed(t0, t1, batch["text_mask"]), _changed(v0, v2, batch["img_mask"])


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("shared", [False, True])
@pytest.mark.parametrize("code", list(BLOCKS))
def test_information_flow_of_each_code(code, shared, norm_first):
    model = tiny(schedule=code, shared=shared, norm_first=norm_first)
    assert _flow(model) == (text_sees_image(code), image_sees_text(code))


@pytest.mark.parametrize(
    "schedule, text_dep, img_dep",
    [
        ("UUUUUM", True, True),  # mixed-modality: the last layer mixes
        ("MUUU", True, True),  # information mixed early survives modality-specific layers
        ("LLLL", True, False),  # image queries never see text, however deep
        ("IIII", False, True),
        ("CC", True, True),
        ("UUUUUU", False, False),
        ("IL", True, True),  # text learns about the image in layer 2; image saw text in layer 1
    ],
)
def test_information_flow_of_schedules(schedule, text_dep, img_dep):
    assert _flow(tiny(schedule=schedule)) == (text_dep, img_dep)


def test_unmasked_mixing_reaches_every_token():
    """With C, every real text token (not only [CLS]) depends on the image."""
    model = tiny(schedule="C")
    batch = make_batch(pad=False)
    t0, _ = _states(model, batch)
    t1, _ = _states(model, dict(batch, img_feats=-batch["img_feats"]))
    assert ((t0 - t1).abs().amax(-1) > 1e-5).all()


def test_any_float_dtype_of_image_inputs():
    """img_feats / img_boxes in fp64 (numpy) or fp16 (the store's type) give the fp32 result (fp16 rounded)."""
    model, batch = tiny(), make_batch()
    want = model(batch)["itm_logits"]
    as64 = {**batch, "img_feats": batch["img_feats"].double(), "img_boxes": batch["img_boxes"].double()}
    torch.testing.assert_close(model(as64)["itm_logits"], want)
    as16 = {**batch, "img_feats": batch["img_feats"].half(), "img_boxes": batch["img_boxes"].half()}
    torch.testing.assert_close(model(as16)["itm_logits"], want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("code", list(BLOCKS))
def test_padding_never_changes_real_tokens(code):
    model = tiny(schedule=code + code)
    batch = make_batch(pad=False)
    t0, v0 = _states(model, batch)
    B, T = batch["text_ids"].shape
    R = batch["img_feats"].shape[1]
    padded = {
        "text_ids": torch.cat([batch["text_ids"], torch.randint(1000, 2000, (B, 4))], 1),
        "text_mask": torch.cat([batch["text_mask"], torch.zeros(B, 4, dtype=torch.bool)], 1),
        "img_feats": torch.cat([batch["img_feats"], 100 * torch.randn(B, 3, FEAT)], 1),
        "img_boxes": torch.cat([batch["img_boxes"], torch.rand(B, 3, 5)], 1),
        "img_mask": torch.cat([batch["img_mask"], torch.zeros(B, 3, dtype=torch.bool)], 1),
    }
    t1, v1 = _states(model, padded)
    torch.testing.assert_close(t1[:, :T], t0, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v1[:, :R], v0, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize(
    "preset", ["merged", "mixed-modality", "single-modality", "single-stream", "coattention", "image-q-12"]
)
def test_unimodal_cache_matches_full_forward(preset, norm_first):
    model = tiny(preset, norm_first=norm_first)
    batch = make_batch()
    with torch.no_grad():
        full = model(batch)["itm_logits"]
        t = model.encode_text(batch["text_ids"], batch["text_mask"])
        v, img_mask = model.encode_image(batch)
        cached = model.match_logits(t, batch["text_mask"], v, img_mask)
        score = model.match_score(t, batch["text_mask"], v, img_mask)  # the match log-odds
    torch.testing.assert_close(cached, full, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(score, full[:, 1] - full[:, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(match_score(full), full[:, 1] - full[:, 0])


def _head_batch():
    batch = make_batch()
    batch["mlm_mask"] = torch.zeros_like(batch["text_mask"])
    batch["mlm_mask"][:, [2, 4]] = True
    batch["mrm_mask"] = torch.zeros_like(batch["img_mask"])
    batch["mrm_mask"][:, 3] = True
    return batch


@pytest.mark.parametrize("preset, options", [(p, {}) for p in mmtlab.list_presets()] + PRE_LN)
def test_last_layer_at_read_rows_gives_the_same_heads_and_gradients(preset, options):
    """``full_states=False`` finishes the last layer only where the heads read; every head output and every
    parameter's gradient equal those of the full pass, and the pass does fewer FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = _head_batch()
    runs = []
    for full in (True, False):
        model = tiny(preset, **options)  # same seed: same weights
        with FlopCounterMode(display=False) as flops:
            out = model(batch, full_states=full)
            heads = {k: v for k, v in out.items() if k not in ("text_states", "img_states")}
            sum(v.float().sin().sum() for v in heads.values()).backward()
        runs.append((out, heads, {n: p.grad for n, p in model.named_parameters()}, flops.get_total_flops()))
    (full_out, full_heads, full_grads, full_flops), (out, heads, grads, fewer_flops) = runs
    assert "text_states" in full_out and "text_states" not in out and "img_states" not in out
    assert heads.keys() == full_heads.keys()
    for k in heads:
        torch.testing.assert_close(heads[k], full_heads[k], atol=1e-5, rtol=1e-4, msg=f"{preset}: {k}")
    for n, g in full_grads.items():
        assert (g is None) == (grads[n] is None), n
        if g is not None:
            scale = float(g.abs().max())  # fp32 sums of different order: compare relative to the gradient's size
            torch.testing.assert_close(grads[n], g, atol=1e-5 * scale, rtol=1e-4, msg=f"{preset}: grad of {n}")
    assert fewer_flops < full_flops


@pytest.mark.parametrize(
    "preset", ["merged", "coattention", "mixed-modality", "single-stream", "single-modality-hloss"]
)
def test_cpu_skips_padding_rows_with_the_same_results(preset, monkeypatch):
    """On a CPU the per-token projections run on real tokens only: every head output, real token state and
    gradient equals the padded computation's (as a GPU runs it), padding rows come back as zeros, and the
    pass does fewer FLOPs."""
    from torch.utils.flop_counter import FlopCounterMode

    from mmtlab.model.transformer import MultimodalTransformer

    batch = make_batch(T=12, R=8)
    batch["text_mask"][1, 5:] = False
    runs = []
    for skip in (True, False):
        if not skip:  # as on a GPU: every row computed
            monkeypatch.setattr(MultimodalTransformer, "_real_rows", staticmethod(lambda *a: None))
        model = tiny(preset)
        with FlopCounterMode(display=False) as flops:
            out = model(batch)
            sum(v.float().sin().sum() for k, v in out.items() if k not in ("text_states", "img_states")).backward()
        runs.append((out, {n: p.grad for n, p in model.named_parameters()}, flops.get_total_flops()))
    (out, grads, fewer), (full, full_grads, flops) = runs
    t_real, v_real = batch["text_mask"][..., None], batch["img_mask"][..., None]
    torch.testing.assert_close(out["text_states"], full["text_states"] * t_real, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["img_states"], full["img_states"] * v_real, atol=1e-5, rtol=1e-4)
    assert (out["text_states"] * ~t_real).abs().sum() == 0 and (out["img_states"] * ~v_real).abs().sum() == 0
    for k in ("itm_logits", "text_emb", "img_emb"):
        torch.testing.assert_close(out[k], full[k], atol=1e-5, rtol=1e-4, msg=f"{preset}: {k}")
    for n, g in full_grads.items():
        scale = float(g.abs().max()) if g is not None else 0.0
        torch.testing.assert_close(grads[n], g, atol=1e-5 * scale + 1e-8, rtol=1e-4, msg=f"{preset}: grad of {n}")
    assert fewer < 0.9 * flops


def test_compact_vocabulary_keeps_its_pieces_and_reads_unk_for_the_rest():
    """``vocab_ids``: one embedding row and MLM output per kept piece; any other id is the same input as [UNK];
    a kept id's row is its own (changing that row changes the output, changing an unused id's input does not
    differ from [UNK])."""
    model, batch = tiny(vocab_ids=WORDS), make_batch(pad=False)
    assert model.text_embed.word.weight.shape[0] == len(WORDS) == model.mlm.bias.shape[0]
    ids = torch.tensor([[101, 1000, 1001, 29999, 102]])
    torch.testing.assert_close(model.text_embed.word_rows(ids), torch.tensor([[2, 5, 1, 1, 3]]))
    batch["text_ids"][:, 3] = 1001  # not kept
    with torch.no_grad():
        unknown = model(batch)["text_states"]
        batch["text_ids"][:, 3] = 100  # [UNK] itself
        torch.testing.assert_close(model(batch)["text_states"], unknown)
        batch["text_ids"][:, 3] = 1050  # kept: its own row
        assert not torch.allclose(model(batch)["text_states"], unknown)
    for bad in ([0, 101, 102], [0, 100, 100, 101], [0, 100, 30522]):  # no [UNK], repeated, out of range
        with pytest.raises(mmtlab.config.ConfigError, match="model.vocab_ids"):
            mmtlab.config.ModelConfig(vocab_ids=bad)


def test_pre_ln_normalises_each_branch_input_and_the_top():
    """``norm_first``: the same weights give other states than post-LN; the top LayerNorm (one per stream,
    one when shared) is what every head reads, so its bias moves the ITM logits; BERT checkpoints are refused."""
    batch = make_batch()
    post, pre = tiny(), tiny(norm_first=True)
    assert len(pre.top_norms) == 2 and len(tiny("single-stream", norm_first=True).top_norms) == 1 and not post.top_norms
    pre.load_state_dict(post.state_dict(), strict=False)  # same layer weights; only the top norms are new
    with torch.no_grad():
        assert not torch.allclose(pre(batch)["text_states"], post(batch)["text_states"], atol=1e-3)
        before = pre(batch)["itm_logits"]
        pre.top_norms[0].bias.add_(1.0)
        assert not torch.allclose(pre(batch)["itm_logits"], before)
    with pytest.raises(mmtlab.config.ConfigError, match="post-LN"):
        mmtlab.config.ModelConfig(norm_first=True, text_init="/some/bert")


@pytest.mark.parametrize("preset", ["merged", "single-stream"])
def test_unimodal_first_only_is_the_first_row(preset):
    model = tiny(preset)
    batch = make_batch()
    L = model.config.layers
    with torch.no_grad():
        t = model.encode_text(batch["text_ids"], batch["text_mask"], n_layers=L)
        t1 = model.encode_text(batch["text_ids"], batch["text_mask"], n_layers=L, first_only=True)
        v, _ = model.encode_image(batch, n_layers=L)
        v1, _ = model.encode_image(batch, n_layers=L, first_only=True)
    assert t1.shape == (3, 1, model.config.width) and v1.shape == (3, 1, model.config.width)
    torch.testing.assert_close(t1, t[:, :1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v1, v[:, :1], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("preset, n_layers", [("merged", None), ("single-stream", 2), ("baseline", None)])
def test_unimodal_vectors_are_each_modality_alone_through_the_projection(preset, n_layers):
    """``text_vector`` / ``image_vector`` are what the itc loss and the embedding scorers computed before: the
    first state of the modality alone through ``n_layers`` layers (default all) as U, projected."""
    model = tiny(preset)
    batch = make_batch()
    n = model.config.layers if n_layers is None else n_layers
    with torch.no_grad():
        t = model.encode_text(batch["text_ids"], batch["text_mask"], n_layers=n, first_only=True)[:, 0]
        v = model.encode_image(batch, n_layers=n, first_only=True)[0][:, 0]
        text_vec = model.text_vector(batch["text_ids"], batch["text_mask"], n_layers)
        img_vec = model.image_vector(batch, n_layers)
        other = model.text_vector(batch["text_ids"], batch["text_mask"], n_layers)
    assert text_vec.shape == img_vec.shape == (3, model.config.proj_dim)
    torch.testing.assert_close(text_vec, model.proj.embed_text(t))
    torch.testing.assert_close(img_vec, model.proj.embed_image(v))
    torch.testing.assert_close(other, text_vec)  # the image does not enter
    if model.config.is_dual:  # a dual model's own fused projections are the unimodal ones
        out = model(batch)
        torch.testing.assert_close(text_vec, out["text_emb"], atol=1e-5, rtol=1e-5)


def test_itm_match_score_matrix_scores_every_caption_with_every_image():
    head = tiny("baseline").itm[-1]
    g = torch.Generator().manual_seed(1)
    t_cls, v_glob = torch.randn(4, 128, generator=g), torch.randn(5, 128, generator=g)
    with torch.no_grad():
        matrix = head.match_score_matrix(t_cls, v_glob)  # (4, 5)
        logits = head(t_cls.repeat_interleave(5, 0), v_glob.repeat(4, 1)).view(4, 5, 2)
    torch.testing.assert_close(matrix, logits[..., 1] - logits[..., 0], atol=1e-5, rtol=1e-5)


def test_pair_up_takes_each_side_from_its_own_rows():
    from mmtlab.model.inputs import IMAGE_KEYS, TEXT_KEYS, pair_up

    batch = make_batch(B=3)
    batch["image_index"] = torch.tensor([10, 11, 12])
    batch["dataset_index"] = torch.zeros(3, dtype=torch.long)  # neither side: not in the pairs
    caption_rows, image_rows = torch.tensor([0, 0, 2, 1]), torch.tensor([0, 1, 0, 2])
    pairs = pair_up(batch, caption_rows, image_rows)
    assert set(pairs) == {k for k in (*TEXT_KEYS, *IMAGE_KEYS) if k in batch}
    for k in ("text_ids", "text_mask"):
        assert torch.equal(pairs[k], batch[k][caption_rows])
    for k in ("img_feats", "img_boxes", "img_mask", "image_index"):
        assert torch.equal(pairs[k], batch[k][image_rows])


def test_dual_encoder_embeddings_are_unimodal():
    model = tiny("baseline")
    batch = make_batch()
    with torch.no_grad():
        out = model(batch)
        other = model(dict(batch, img_feats=torch.randn_like(batch["img_feats"])))
    torch.testing.assert_close(out["text_emb"], other["text_emb"])
    assert torch.allclose(out["text_emb"].norm(dim=-1), torch.ones(3))


def test_pixel_path_produces_the_image_stream():
    model = tiny("merged", image_input="pixels", image_size=32, patch_size=8)
    pixels = torch.rand(2, 3, 32, 32)
    batch = {k: v[:2] for k, v in make_batch().items() if k.startswith("text")}
    batch["pixels"] = pixels
    out = model(batch)
    assert out["img_states"].shape == (2, 1 + 16, model.config.width)
    boxes = model.image_embed.boxes(2)
    assert boxes.shape == (2, 17, 5) and boxes[0, 0].tolist() == [0, 0, 1, 1, 1]
    assert torch.allclose(boxes[0, 1:, 4].sum(), torch.tensor(1.0))


# ----------------------------------------------------------------------------------------------- BERT init
def test_text_stream_equals_hf_bert():
    transformers = pytest.importorskip("transformers")
    from mmtlab.assets import bert_vocab_dir

    path = bert_vocab_dir()
    model = mmtlab.build_model(
        "single-modality", width=384, heads=12, ffn=1536, feat_dim=FEAT, text_init=str(path)
    ).eval()
    bert = transformers.BertModel.from_pretrained(str(path)).eval()
    batch = make_batch(T=12)
    with torch.no_grad():
        ours = model(batch)["text_states"]
        ref = bert(input_ids=batch["text_ids"], attention_mask=batch["text_mask"].long()).last_hidden_state
    mask = batch["text_mask"]
    assert (ours - ref)[mask].abs().max().item() < 1e-4


def test_text_init_rejects_a_mismatched_width(tmp_path):
    from mmtlab.assets import bert_vocab_dir
    from mmtlab.config import ConfigError

    with pytest.raises(ConfigError, match="hidden_size=384.*model.width=128"):
        mmtlab.build_model("merged", scale="tiny", text_init=str(bert_vocab_dir()))
    with pytest.raises(ConfigError, match="not a Hugging Face BERT directory"):
        mmtlab.build_model("merged", scale="tiny", text_init=str(tmp_path))


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda b: b.pop("img_mask"), r"missing key 'img_mask'.*\(B, R\)"),
        (lambda b: b.pop("text_ids"), r"missing key 'text_ids'"),
        (lambda b: b.update(img_feats=torch.randn(3, 6, 64)), r"'img_feats'.*\(3, 6, 64\).*feat_dim=32.*\(B, R, 32\)"),
        (lambda b: b.update(text_mask=torch.ones(3, 8, dtype=torch.bool)), r"'text_mask'.*\(3, 8\).*\(B, T\).*T=9"),
        (lambda b: b.update(img_mask=torch.ones(2, 6, dtype=torch.bool)), r"'img_mask'.*\(2, 6\).*B=3"),
        (lambda b: b.update(img_boxes=torch.rand(3, 6, 4)), r"'img_boxes'.*\(B, R, 5\)"),
        (lambda b: b.update(text_mask=b["text_mask"].long()), r"'text_mask'\] must have dtype torch.bool"),
        (lambda b: b.update(img_feats=b["img_feats"].tolist()), r"'img_feats'\] must be a torch.Tensor"),
        (lambda b: b.update(text_ids=b["text_ids"] + 40000), r"outside \[0, model.vocab_size"),
    ],
)
def test_bad_batches_raise_value_errors_naming_the_key(mutate, pattern):
    model = tiny()
    batch = make_batch()
    mutate(batch)
    with pytest.raises(ValueError, match=pattern):
        model(batch)
