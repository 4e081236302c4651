"""Losses and input corruption, on hand-made batches that follow the batch contract."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmtlab.config import ConfigError
from mmtlab.model import build_model
from mmtlab.train.config import LossConfig, loss_config
from mmtlab.train.losses import (
    PretrainingLoss,
    cross_contrastive_loss,
    dual_contrastive_loss,
    itm_loss,
    mlm_loss,
    mrm_cls_loss,
    mrm_kl_loss,
    mrm_reg_loss,
)
from mmtlab.train.masking import (
    choose_per_row,
    itm_negatives,
    mask_regions,
    mask_words,
    piece_idf,
    similar_caption_index,
)

FEAT, CLASSES = 16, 7


def random_batch(B: int = 6, T: int = 10, R: int = 5, seed: int = 0) -> dict:
    """A batch of the contract + the loader's extra keys; captions and images of different lengths."""
    g = torch.Generator().manual_seed(seed)
    text_ids = torch.zeros(B, T, dtype=torch.long)
    word_ids = torch.full((B, T), -1)
    text_mask = torch.zeros(B, T, dtype=torch.bool)
    img_mask = torch.zeros(B, R, dtype=torch.bool)
    for i in range(B):
        n = int(torch.randint(4, T + 1, (1,), generator=g))  # real tokens incl. [CLS], [SEP]
        text_ids[i, :n] = torch.randint(1000, 2000, (n,), generator=g)
        text_ids[i, 0], text_ids[i, n - 1] = 101, 102
        text_mask[i, :n] = True
        word_ids[i, 1 : n - 1] = torch.arange(n - 2) // 2  # two pieces per word
        img_mask[i, : int(torch.randint(2, R + 1, (1,), generator=g))] = True
    cls = torch.rand(B, R, CLASSES, generator=g).softmax(-1)
    return {
        "text_ids": text_ids,
        "text_mask": text_mask,
        "text_word_ids": word_ids,
        "img_feats": torch.randn(B, R, FEAT, generator=g),
        "img_boxes": torch.rand(B, R, 5, generator=g),
        "img_mask": img_mask,
        "img_cls": cls,
        "image_index": torch.arange(B) + 100,
        "caption_index": torch.arange(B),
    }


def tiny_model(preset: str = "vilbert-2block", **kw):
    torch.manual_seed(0)
    return build_model(preset, scale="tiny", feat_dim=FEAT, n_region_classes=CLASSES, width=32, heads=2, ffn=64, **kw)


# --------------------------------------------------------------------------------------------- masking
def test_choose_per_row_counts_and_validity():
    torch.manual_seed(0)
    valid = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 1, 1, 1], [1, 1, 0, 0, 0, 0, 0, 0, 0, 0], [0] * 10]).bool()
    picked = choose_per_row(valid, 0.15)
    assert picked.sum(1).tolist() == [2, 1, 0]  # round(1.5) = 2, max(1, round(0.3)) = 1, nothing valid
    assert not (picked & ~valid).any()


def test_mask_words_whole_words_and_80_10_10():
    torch.manual_seed(0)
    B, T = 400, 12
    ids = torch.randint(1000, 2000, (B, T))
    word_ids = torch.full((B, T), -1)
    word_ids[:, 1:11] = torch.arange(10) // 2  # 5 words of 2 pieces; [CLS] and [SEP] are -1
    word_ids[:2, 5:11] = -1  # two short captions (2 words) padded
    new, mask = mask_words(ids, word_ids, 0.15, mask_token_id=103, vocab_size=30522)
    assert not mask[:, 0].any() and not mask[:, 11].any() and not mask[:2, 5:].any()  # never special / pad
    assert (mask.sum(1) == 2).all()  # max(1, round(0.15 * 5)) = max(1, round(0.3)) = 1 word = 2 pieces
    assert (mask[:, 1:11:2] == mask[:, 2:12:2]).all()  # both pieces of a word or neither
    assert (new[~mask] == ids[~mask]).all()  # nothing changes outside the targets
    frac_mask = (new[mask] == 103).float().mean().item()
    frac_kept = (new[mask] == ids[mask]).float().mean().item()
    assert abs(frac_mask - 0.8) < 0.05 and abs(frac_kept - 0.1) < 0.04, (frac_mask, frac_kept)
    assert {int(word_ids[b][mask[b]][0]) for b in range(2, B)} == {0, 1, 2, 3, 4}  # any word can be chosen


def test_mask_words_random_replacements_come_from_the_given_vocabulary():
    torch.manual_seed(0)
    ids = torch.randint(1000, 2000, (500, 12))
    word_ids = torch.arange(12).expand(500, 12).clone()
    kept = torch.tensor([0, 100, 101, 102, 103, 5000, 6000])
    new, mask = mask_words(ids, word_ids, 0.5, mask_token_id=103, vocab_size=30522, vocab_ids=kept)
    replaced = new[mask & (new != 103) & (new != ids)]
    assert replaced.numel() > 200 and torch.isin(replaced, kept).all()


def test_choose_per_row_with_weights_draws_in_proportion():
    """Weighted picks without replacement: one of two items with weights 3 : 1 is picked 3/4 of the time, the
    count is unchanged, and an item of weight ~0 is picked only when nothing else is left."""
    torch.manual_seed(0)
    valid = torch.ones(4000, 2, dtype=torch.bool)
    picked = choose_per_row(valid, 0.5, torch.tensor([3.0, 1.0]).expand(4000, 2))
    assert (picked.sum(1) == 1).all()
    assert abs(picked[:, 0].float().mean().item() - 0.75) < 0.03
    valid = torch.tensor([[1, 1, 1, 1, 0]] * 500).bool()
    weights = torch.tensor([1e-12, 1.0, 1.0, 1.0, 5.0]).expand(500, 5)
    picked = choose_per_row(valid, 0.75, weights)  # round(3) = 3 of 4 valid: always the three weight-1 items
    assert (picked.sum(1) == 3).all() and not picked[:, 0].any() and not picked[:, 4].any()


def test_piece_idf_by_hand():
    """idf = log((1 + B) / (1 + captions using the piece)); special tokens 0; a piece in every caption the floor."""
    ids = torch.tensor([[101, 7, 8, 102], [101, 7, 9, 102], [101, 7, 8, 0]])
    word_ids = torch.tensor([[-1, 0, 1, -1], [-1, 0, 1, -1], [-1, 0, 1, -1]])
    idf = piece_idf(ids, word_ids)
    B = 3
    want = torch.tensor(
        [
            [0.0, 1e-3, math.log((1 + B) / 3), 0.0],
            [0.0, 1e-3, math.log((1 + B) / 2), 0.0],
            [0.0, 1e-3, math.log((1 + B) / 3), 0.0],
        ]
    )
    torch.testing.assert_close(idf, want)


def test_idf_masking_picks_rare_words_and_keeps_the_count():
    """``loss.mlm_words=idf``: a word that is in every caption (an article) is almost never masked (weight 1e-3
    against >= 0.68) while rarer words are left; a rare word is masked more often than a common one; the number
    of masked words is BERT's."""
    torch.manual_seed(0)
    B = 64
    ids = torch.full((B, 7), 0)
    ids[:, 0], ids[:, 6] = 101, 102
    ids[:, 1] = 1037  # "a" in every caption
    ids[:, 2] = 2000 + torch.arange(B) % 2  # a word in half of the captions
    ids[:, 3] = 3000 + torch.arange(B) % 16  # rarer words (4 captions each)
    ids[:, 4] = 1037
    ids[:, 5] = 5000 + torch.arange(B)  # a word of its own per caption
    word_ids = torch.tensor([-1, 0, 1, 2, 3, 4, -1]).expand(B, 7)
    counts = torch.zeros(5)
    for _ in range(50):
        _, mask = mask_words(ids, word_ids, 0.4, 103, 30522, piece_weights=piece_idf(ids, word_ids))
        assert (mask.sum(1) == 2).all()  # round(0.4 * 5) = 2 words of one piece each
        counts += mask[:, 1:6].sum(0).float()
    assert counts[0] + counts[3] < 0.005 * counts.sum(), counts  # "a"
    assert counts[4] > counts[2] > counts[1] > 0, counts


def test_idf_masking_reaches_the_loss(monkeypatch):
    """The trainer's loss masks by idf only when ``loss.mlm_words=idf``."""
    seen = []
    import mmtlab.train.losses as losses

    def spy(*args, **kw):
        seen.append(kw.get("piece_weights"))
        return mask_words(*args, **kw)

    monkeypatch.setattr(losses, "mask_words", spy)
    model, batch = tiny_model(), random_batch()
    for words in ("uniform", "idf"):
        PretrainingLoss(loss_config("itm+mlm", mlm_words=words))(model, batch, 0)
    assert seen[0] is None and seen[1] is not None and seen[1].shape == batch["text_ids"].shape


def test_mlm_words_must_be_known():
    with pytest.raises(ConfigError, match="loss.mlm_words: 'content'; valid: uniform, idf"):
        loss_config("itm+mlm", mlm_words="content")


def test_mlm_targets_are_rows_of_a_compact_vocabulary():
    """With model.vocab_ids the MLM loss scores each masked piece against its own row (hand computation)."""
    words = [0, 100, 101, 102, 103, *range(1000, 2000)]
    model, batch = tiny_model(vocab_ids=words).eval(), random_batch()
    torch.manual_seed(3)
    terms = PretrainingLoss(loss_config("itm+mlm", itm_neg_ratio=0.0))(model, batch, 0)[1]
    torch.manual_seed(3)
    x = itm_negatives(batch, 0.0)[0]
    x["text_ids"], masked = mask_words(batch["text_ids"], batch["text_word_ids"], 0.15, 103, 30522, torch.tensor(words))
    x["mlm_mask"] = masked
    logits = model(x, full_states=False)["mlm_logits"]
    want = F.cross_entropy(logits, batch["text_ids"][masked] - 1000 + 5)  # ids 1000.. sit at rows 5..
    torch.testing.assert_close(terms["mlm"], want)


def test_mask_regions_never_global_or_padding():
    torch.manual_seed(0)
    feats = torch.randn(3, 6, 4)
    img_mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 0, 0, 0], [1, 0, 0, 0, 0, 0]]).bool()
    new, mask = mask_regions(feats, img_mask, 0.4)
    assert mask.sum(1).tolist() == [2, 1, 0]  # round(0.4 * 5) = 2, max(1, round(0.4 * 2)) = 1, no real region
    assert not mask[:, 0].any() and not (mask & ~img_mask).any()
    assert (new[mask] == 0).all() and (new[~mask] == feats[~mask]).all()


def test_itm_negatives_swap_images_and_label():
    torch.manual_seed(0)
    b = random_batch(B=200, seed=1)
    out, labels = itm_negatives(b, ratio=0.5, swap="image")
    swapped = out["image_index"] != b["image_index"]
    assert torch.equal(labels, (~swapped).long())
    assert 0.4 < swapped.float().mean() < 0.6
    assert torch.equal(out["text_ids"], b["text_ids"])  # captions stay
    src = out["image_index"] - 100
    assert torch.equal(out["img_feats"], b["img_feats"][src]) and torch.equal(out["img_cls"], b["img_cls"][src])
    assert torch.equal(b["image_index"], torch.arange(200) + 100)  # the input batch is untouched


def test_itm_negatives_same_picture_stays_positive_and_caption_swap():
    torch.manual_seed(0)
    b = random_batch(B=4)
    b["image_index"] = torch.tensor([7, 7, 7, 7])  # four captions of one picture: no negative possible
    _, labels = itm_negatives(b, ratio=1.0)
    assert labels.tolist() == [1, 1, 1, 1]
    b = random_batch(B=50)
    out, labels = itm_negatives(b, ratio=1.0, swap="caption")
    assert labels.sum() == 0 and torch.equal(out["img_feats"], b["img_feats"])
    assert (out["caption_index"] != b["caption_index"]).all()
    out, labels = itm_negatives(b, ratio=1.0, swap="either")
    image_swapped = out["image_index"] != b["image_index"]
    caption_swapped = out["caption_index"] != b["caption_index"]
    assert labels.sum() == 0 and torch.equal(image_swapped, ~caption_swapped)  # exactly one side per pair
    assert 0 < image_swapped.sum() < 50


def test_similar_negatives_pick_the_caption_that_says_the_same_thing():
    """Captions 0/1 and 2/3 share their content pieces; 4-7 share nothing. Common pieces ([CLS], [SEP] and a
    piece in every caption, like an article) do not count."""
    content = [[1010, 1011, 1012], [1010, 1011, 1013], [1020, 1021, 1022], [1020, 1021, 1023]]
    content += [[1030 + 3 * k, 1031 + 3 * k, 1032 + 3 * k] for k in range(4)]
    text_ids = torch.tensor([[101, 1000, *c, 102, 0] for c in content])  # 1000 is in every caption
    text_mask = text_ids != 0
    torch.manual_seed(0)
    picks = torch.stack([similar_caption_index(text_ids, text_mask) for _ in range(200)])  # (200, 8)
    assert (picks != torch.arange(8)).all()  # never the pair itself
    assert (picks[:, 0] == 1).float().mean() > 0.99 and (picks[:, 3] == 2).float().mean() > 0.99
    assert len(set(picks[:, 4].tolist())) > 3  # no similar caption: a spread over the others

    b = random_batch(B=8)
    b.update(text_ids=text_ids, text_mask=text_mask, text_word_ids=torch.arange(7).expand(8, -1))
    out, labels = itm_negatives(b, ratio=1.0, negatives="similar")
    assert labels.sum() == 0 and out["image_index"][0] == b["image_index"][1]
    with pytest.raises(ConfigError, match="itm_negatives"):
        LossConfig(itm_negatives="hardest")


def test_itc_negatives_follow_the_similarity_and_skip_the_same_picture():
    """``itm_negatives="itc"``: caption i gets the image its embedding ranks highest (row i of the
    caption-to-image logits), image i the caption ranked highest for it (column i); never the pair itself
    nor another caption of the same picture."""
    b = random_batch(B=6)
    b["image_index"] = torch.tensor([100, 101, 102, 103, 104, 104])  # rows 4 and 5: two captions, one picture
    sim = torch.full((6, 6), -50.0)
    sim[0, 3] = sim[1, 2] = sim[2, 5] = sim[3, 0] = 50.0  # row i -> the preferred image
    sim[4, 5] = sim[5, 4] = 50.0  # the same picture: must not be drawn
    sim[4, 1] = sim[5, 1] = 10.0  # their best other picture
    torch.manual_seed(0)
    out, labels = itm_negatives(b, ratio=1.0, swap="image", negatives="itc", similarity=sim)
    assert out["image_index"].tolist() == [103, 102, 104, 100, 101, 101]
    assert labels.sum() == 0
    out, labels = itm_negatives(b, ratio=1.0, swap="caption", negatives="itc", similarity=sim)
    picked = out["caption_index"].tolist()  # column i: the caption that ranks image i highest
    assert picked[0] == 3 and picked[1] in (4, 5) and picked[2:4] == [1, 0]
    assert labels.sum() == 0
    with pytest.raises(ValueError, match="similarity"):
        itm_negatives(b, ratio=1.0, negatives="itc")
    with pytest.raises(ConfigError, match="loss.weights.itc"):
        LossConfig(weights={"itm": 1.0}, itm_negatives="itc")


def test_itc_negatives_in_the_loss_use_the_itc_embeddings():
    """With ``itc`` weighted, the fused ITM pass draws its negatives from the same pass's embeddings."""
    cfg = LossConfig(weights={"itm": 1.0, "mlm": 1.0, "itc": 0.5}, itm_negatives="itc")
    model = tiny_model()
    torch.manual_seed(3)
    total, terms = PretrainingLoss(cfg)(model, random_batch(), step=0)
    assert set(terms) == {"itm", "mlm", "itc"} and torch.isfinite(total)
    total.backward()
    assert model.proj.text.weight.grad.abs().sum() > 0 and model.itm[-1].classifier.weight.grad.abs().sum() > 0


# --------------------------------------------------------------------------------------------- terms
def test_terms_match_hand_computation():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    labels = torch.tensor([0, 1])
    expected = -(math.log(math.exp(2) / (math.exp(2) + 1)) + math.log(math.e / (1 + math.e))) / 2
    assert itm_loss({"itm_logits": logits}, labels).item() == pytest.approx(expected, rel=1e-6)
    per_layer = torch.stack([logits, torch.zeros(2, 2)])  # second layer: log 2 for both
    assert itm_loss({"itm_logits_per_layer": per_layer, "itm_logits": per_layer[-1]}, labels).item() == pytest.approx(
        (expected + math.log(2)) / 2, rel=1e-6
    )
    # KL to a one-hot target is the cross-entropy; to the prediction itself it is 0
    pred = torch.tensor([[1.0, 2.0, 3.0]])
    onehot = torch.tensor([[0.0, 0.0, 1.0]])
    assert mrm_kl_loss(pred, onehot).item() == pytest.approx(-F.log_softmax(pred, -1)[0, 2].item(), rel=1e-6)
    assert mrm_kl_loss(pred, pred.softmax(-1)).item() == pytest.approx(0.0, abs=1e-6)
    assert mrm_kl_loss(pred, 4 * pred.softmax(-1)).item() == pytest.approx(0.0, abs=1e-6)  # renormalised
    assert mrm_cls_loss(pred, torch.tensor([[0.1, 0.7, 0.2]])).item() == pytest.approx(
        -F.log_softmax(pred, -1)[0, 1].item()
    )
    assert mrm_reg_loss(torch.tensor([[1.0, 3.0]]), torch.tensor([[0.0, 0.0]])).item() == pytest.approx(5.0)
    empty = torch.zeros(0, 5, requires_grad=True)
    assert mlm_loss(empty, torch.zeros(0, dtype=torch.long)).item() == 0.0  # no masked token: 0, not NaN
    # -100 targets are ignored, as F.cross_entropy's mean does; empty sets keep the graph (a gradient of zeros)
    logits, targets = torch.randn(4, 7), torch.tensor([3, -100, 0, -100])
    assert mlm_loss(logits, targets).item() == pytest.approx(F.cross_entropy(logits, targets).item(), rel=1e-6)
    assert mrm_kl_loss(empty, torch.zeros(0, 5)).item() == 0.0 and mrm_reg_loss(empty, torch.zeros(0, 5)).item() == 0.0
    mrm_cls_loss(empty, torch.zeros(0, 5)).backward()
    assert empty.grad is not None and empty.grad.shape == (0, 5)


def test_dual_contrastive_hand_case_and_false_negatives():
    t = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    s = torch.tensor(2.0)
    # t2i row 0: [2, 1.2] target 0; row 1: [0, 1.6] target 1; i2t row 0: [2, 0], row 1: [1.2, 1.6]
    ce = lambda a, b: -a + math.log(math.exp(a) + math.exp(b))  # noqa: E731
    expected = ((ce(2, 1.2) + ce(1.6, 0)) / 2 + (ce(2, 0) + ce(1.6, 1.2)) / 2) / 2
    assert dual_contrastive_loss(t, v, s).item() == pytest.approx(expected, rel=1e-6)
    # the same picture twice: the other copy is not a negative, so each row has only its positive
    assert dual_contrastive_loss(t, v, s, ids=torch.tensor([5, 5])).item() == pytest.approx(0.0, abs=1e-6)


def test_cross_contrastive_uses_k_negatives_and_is_finite():
    model = tiny_model()
    model.eval()
    b = random_batch(B=5)
    calls = []
    model.register_forward_hook(lambda m, args, out: calls.append(args[0]["text_ids"].shape[0]))
    loss = cross_contrastive_loss(model, b, k=3)
    assert calls == [5 * 4]  # B * (K + 1) pairs in one pass
    assert torch.isfinite(loss) and loss.item() > 0
    loss.backward()
    assert model.itm[-1].classifier.weight.grad.abs().sum() > 0
    # with every image the same picture there is no negative: only the positive remains, loss 0
    b["image_index"] = torch.zeros(5, dtype=torch.long)
    assert cross_contrastive_loss(model, b, k=3).item() == pytest.approx(0.0, abs=1e-6)


# --------------------------------------------------------------------------------------------- loss sets
@pytest.mark.parametrize("name", ["itm+mlm+mrm", "itm+mrm", "itm+mlm", "contrastive32", "contrastive1024"])
def test_loss_sets_run_and_backprop(name):
    cfg = loss_config(name)
    preset = "baseline" if name == "contrastive1024" else "vilbert-2block"
    model = tiny_model(preset)
    torch.manual_seed(1)
    total, terms = PretrainingLoss(cfg)(model, random_batch(), step=0)
    assert set(terms) == set(cfg.active)
    assert torch.isfinite(total)
    assert total.item() == pytest.approx(sum(cfg.weight(t) * v.item() for t, v in terms.items()), rel=1e-6)
    total.backward()
    assert model.text_embed.word.weight.grad is not None


def test_all_terms_and_itm_after_every_layer():
    weights = {t: 1.0 for t in ("itm", "mlm", "mrm-kl", "mrm-cls", "mrm-reg", "itm-contrastive", "itc")}
    cfg = LossConfig(name="all", weights=weights, contrastive_k=2)
    torch.manual_seed(1)
    total, terms = PretrainingLoss(cfg)(tiny_model(), random_batch(), step=0)
    assert set(terms) == set(weights) and all(torch.isfinite(v) for v in terms.values())
    # an ITM head after every layer (preset single-modality-hloss): the ITM term is the mean over the heads
    model = tiny_model("single-modality-hloss").eval()
    assert model.config.itm_every_layer and len(model.itm) == model.config.layers
    b = random_batch()
    torch.manual_seed(2)
    _, terms = PretrainingLoss(LossConfig(weights={"itm": 1.0}))(model, b, step=0)
    torch.manual_seed(2)
    x, labels = itm_negatives(b, 0.5)
    per_layer = model(x)["itm_logits_per_layer"]
    expected = sum(F.cross_entropy(layer, labels) for layer in per_layer) / len(per_layer)
    assert terms["itm"].item() == pytest.approx(expected.item(), rel=1e-6)


def test_itc_on_a_dual_model_is_its_contrastive_loss_computed_once():
    model, b = tiny_model("baseline").eval(), random_batch()
    cfg = LossConfig(weights={"itm-contrastive": 1.0, "itc": 0.5})
    total, terms = PretrainingLoss(cfg)(model, b, step=0)
    alone = PretrainingLoss(LossConfig(weights={"itm-contrastive": 1.0}))(model, b, step=0)[1]["itm-contrastive"]
    assert terms["itc"] is terms["itm-contrastive"] and terms["itc"].item() == pytest.approx(alone.item(), rel=1e-6)
    assert total.item() == pytest.approx(1.5 * alone.item(), rel=1e-6)


def test_a_term_counts_from_its_start_step():
    """``loss.start``: MLM joins at step 5; before that it is computed and logged but weighs nothing."""
    cfg = LossConfig(weights={"itm": 1.0, "mlm": 1.0}, start={"mlm": 5})
    model, b = tiny_model(), random_batch()
    for step, with_mlm in ((0, False), (4, False), (5, True), (9, True)):
        torch.manual_seed(0)
        total, terms = PretrainingLoss(cfg)(model, b, step=step)
        assert terms["mlm"].item() > 0
        expected = terms["itm"] + (terms["mlm"] if with_mlm else 0.0)
        assert total.item() == pytest.approx(expected.item(), rel=1e-6), step
    with pytest.raises(ConfigError, match="not in this loss set"):
        LossConfig(weights={"itm": 1.0}, start={"mlm": 5})
    with pytest.raises(ConfigError, match="must be >= 0"):
        LossConfig(weights={"itm": 1.0, "mlm": 1.0}, start={"mlm": -1})


def test_clean_itm_inputs_score_itm_on_unmasked_pairs():
    """``loss.itm_inputs=clean`` (UNITER): ITM comes from its own pass over the unmasked pairs, MLM and MRM from a
    second pass over the pairs ITM kept matched, masked (the pairs they are scored on in the one-pass form);
    ``masked`` (the default) scores ITM on masked inputs."""
    model, b = tiny_model().eval(), random_batch(B=8)
    with torch.no_grad():  # an ITM head far from ln 2, so that masked and clean inputs score apart
        for layer in (model.itm[-1].text_pool, model.itm[-1].img_pool, model.itm[-1].classifier):
            layer.weight.mul_(50.0)
    weights = {"itm": 1.0, "mlm": 1.0, "mrm-kl": 1.0}
    torch.manual_seed(4)
    _, clean = PretrainingLoss(LossConfig(weights=weights, itm_inputs="clean"))(model, b, step=0)
    torch.manual_seed(4)
    x, labels = itm_negatives(b, 0.5)
    assert 0 < labels.sum() < 8
    assert clean["itm"].item() == pytest.approx(itm_loss(model(x), labels).item(), rel=1e-6)
    torch.manual_seed(4)
    _, masked = PretrainingLoss(LossConfig(weights=weights))(model, b, step=0)
    assert abs(masked["itm"].item() - clean["itm"].item()) > 1e-3
    assert set(clean) == set(masked) == set(weights)
    seen = []  # the second pass: the matched pairs of the ITM batch, and only those
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0]["text_ids"].shape[0]))
    torch.manual_seed(4)
    PretrainingLoss(LossConfig(weights=weights, itm_inputs="clean"))(model, b, step=0)
    assert seen == [8, int(labels.sum())]
    with pytest.raises(ConfigError, match="itm_inputs"):
        LossConfig(itm_inputs="noisy")


def test_mlm_and_mrm_only_on_matched_pairs_but_inputs_masked_everywhere():
    """MLM / MRM targets only in matched pairs; the corruption itself hits every pair, so whether an input
    is masked says nothing about its ITM label."""
    cfg = LossConfig(weights={"itm": 1.0, "mlm": 1.0, "mrm-reg": 1.0}, itm_neg_ratio=1.0)
    model = tiny_model()
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0]))
    b = random_batch()
    torch.manual_seed(0)
    _, terms = PretrainingLoss(cfg)(model, b, step=0)
    x = seen[0]
    assert terms["mlm"].item() == 0.0 and terms["mrm-reg"].item() == 0.0  # every pair is a negative
    assert not x["mlm_mask"].any() and not x["mrm_mask"].any()
    assert (x["text_ids"] != b["text_ids"]).any(1).float().mean() > 0.5  # yet the words are masked
    assert ((x["img_feats"] == 0).all(-1) & x["img_mask"]).any(1).all()  # and a region of every image
    cfg = LossConfig(weights={"itm": 1.0, "mlm": 1.0, "mrm-reg": 1.0}, itm_neg_ratio=0.5)
    seen.clear()
    torch.manual_seed(1)
    PretrainingLoss(cfg)(model, random_batch(B=40), step=0)
    rows_with_targets = seen[0]["mlm_mask"].any(1)
    assert 0 < rows_with_targets.sum() < 40 and torch.equal(rows_with_targets, seen[0]["mrm_mask"].any(1))


def test_loss_config_errors():
    with pytest.raises(ConfigError, match="unknown loss term"):
        LossConfig(weights={"itmm": 1.0})
    with pytest.raises(ConfigError, match="all zero"):
        LossConfig(weights={"itm": 0.0})
    with pytest.raises(ConfigError, match="valid loss sets"):
        loss_config("nope")
    with pytest.raises(ConfigError, match="itm_swap"):
        LossConfig(itm_swap="both")
    b = random_batch()
    del b["img_cls"]
    with pytest.raises(ConfigError, match="mrm-reg"):
        PretrainingLoss(loss_config("itm+mrm"))(tiny_model(), b, step=0)


# ------------------------------------------------------------------------------------------ the term registry
def test_the_registry_holds_every_term_of_every_loss_set_and_the_fused_pass_computes_its_terms():
    from mmtlab.presets import list_loss_sets, loss_set
    from mmtlab.run.terms import LOSS_TERMS, TERMS
    from mmtlab.train.losses import FUSED_LOSSES

    used = {term for name in list_loss_sets() for term in loss_set(name)["weights"]}
    assert used <= set(LOSS_TERMS) and tuple(TERMS) == LOSS_TERMS
    assert set(FUSED_LOSSES) == {name for name, t in TERMS.items() if t.fused}
    assert all(t.masks is None or t.fused for t in TERMS.values())  # only the shared pass masks inputs
    with pytest.raises(ConfigError, match="unknown loss term"):
        LossConfig(weights={"itm": 1.0, "nope": 1.0})


@pytest.mark.parametrize("dual", [False, True])
def test_what_each_loss_set_trains_follows_the_registry(dual):
    """Evaluation's scorer checks read the registry: the ITM head is trained by ``itm`` and, on a cross-encoder,
    ``itm-contrastive``; the embeddings by ``itc`` and, on a dual model, ``itm-contrastive``."""
    from types import SimpleNamespace

    from mmtlab.eval.retrieval import embedding_trained, itm_trained
    from mmtlab.presets import list_loss_sets

    for name in list_loss_sets():
        loss = loss_config(name)
        cfg = SimpleNamespace(loss=loss, model=SimpleNamespace(is_dual=dual))
        w = loss.weight
        assert itm_trained(cfg) == (w("itm") > 0 or (w("itm-contrastive") > 0 and not dual)), name
        assert embedding_trained(cfg) == (w("itc") > 0 or (w("itm-contrastive") > 0 and dual)), name


def test_a_term_missing_its_input_names_what_it_needs():
    model = build_model("merged", "tiny", feat_dim=FEAT, n_region_classes=CLASSES)
    batch = random_batch()
    del batch["img_cls"]
    with pytest.raises(ConfigError, match="mrm-kl need region class distributions"):
        PretrainingLoss(loss_config("itm+mlm+mrm"))(model, batch, 0)
    batch = random_batch()
    del batch["text_word_ids"]
    with pytest.raises(ValueError, match="mlm need the word of each piece"):
        PretrainingLoss(loss_config("itm+mlm"))(model, batch, 0)
