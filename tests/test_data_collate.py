"""Tokenisation and collation into the batch contract."""

import pytest
import torch

from mmtlab.config import ConfigError, apply_overrides
from mmtlab.data import DataConfig, DataError, collate_images, collate_texts, get_tokenizer, open_store
from test_data_store import write_small


@pytest.fixture(scope="module")
def tok():
    return get_tokenizer()


def test_tokenizer_wraps_and_lowercases(tok):
    enc = tok.encode("A Red CIRCLE")
    assert enc.tokens == ["[CLS]", "a", "red", "circle", "[SEP]"]
    assert tok.token_to_id("[CLS]") == 101 and tok.token_to_id("[SEP]") == 102  # bert-base-uncased ids


def test_collate_texts_word_ids_padding_truncation(tok):
    out = collate_texts(tok, ["unbelievably red", "a b c d e f g h"], max_text_len=6)
    ids, mask, words = out["text_ids"], out["text_mask"], out["text_word_ids"]
    assert ids.shape == (2, 6) and ids.dtype == torch.long and mask.dtype == torch.bool
    pieces = tok.encode("unbelievably red").ids  # [CLS] un ##bel ##ie ##va ##bly red [SEP] or similar: > 6
    n_un = len(tok.encode("unbelievably").ids) - 2
    assert n_un > 1  # a multi-piece word
    assert ids[0, 0] == 101 and ids[0, -1] == 102  # cut, [SEP] kept
    assert ids[0, 1:5].tolist() == pieces[1:5]
    assert words[0].tolist()[:5] == [-1] + [0] * 4 and words[0, -1] == -1
    assert ids[1].tolist() == [101] + tok.encode("a b c d").ids[1:5] + [102]
    assert words[1].tolist() == [-1, 0, 1, 2, 3, -1]
    short = collate_texts(tok, ["red", "a red ring"], max_text_len=40)
    assert short["text_ids"].shape == (2, 5)  # padded to the longest, not to max_text_len
    assert short["text_mask"][0].tolist() == [True, True, True, False, False]
    assert short["text_ids"][0, 3:].tolist() == [0, 0] and short["text_word_ids"][0, 3:].tolist() == [-1, -1]


def test_collate_images_global_token_and_cap(tmp_path):
    s = open_store(write_small(tmp_path / "s"))  # image i: i+1 regions, feature value i + region/10
    b = collate_images(s, [0, 2], max_regions=36)
    assert b["img_feats"].shape == (2, 4, 4) and b["img_feats"].dtype == torch.float32
    assert b["img_mask"].tolist() == [[True, True, False, False], [True, True, True, True]]
    torch.testing.assert_close(b["img_feats"][1, 0], torch.full((4,), 2.1), atol=1e-3, rtol=0)  # mean of 2.0, 2.1, 2.2
    torch.testing.assert_close(b["img_feats"][0, 0], b["img_feats"][0, 1])
    assert b["img_feats"][0, 2:].abs().sum() == 0
    assert b["img_boxes"][:, 0].tolist() == [[0, 0, 1, 1, 1]] * 2
    torch.testing.assert_close(b["img_boxes"][1, 1], torch.tensor([0, 0, 0.5, 0.25, 0.125]))
    assert b["img_cls"].shape == (2, 4, 3) and b["img_cls"][1, 0].tolist() == [0, 0, 1]
    assert "pixels" not in b
    capped = collate_images(s, [2], max_regions=2, with_pixels=True)
    assert capped["img_feats"].shape == (1, 3, 4)
    torch.testing.assert_close(capped["img_feats"][0, 0], torch.full((4,), 2.05), atol=1e-3, rtol=0)  # mean of kept
    assert capped["pixels"].shape == (1, 3, 2, 2) and torch.allclose(
        capped["pixels"], torch.full((1, 3, 2, 2), 2 / 255)
    )


def test_collate_pixels_missing_is_an_error(tmp_path):
    s = open_store(write_small(tmp_path / "s", with_pixels=False))
    with pytest.raises(DataError, match=r"/s: the model reads pixels .*holds no pixels.*--pixels 64"):
        collate_images(s, [0], with_pixels=True)


def test_data_config_overrides_and_errors():
    cfg = apply_overrides(DataConfig(), {"max_regions": "20", "sampling": "dataset", "weights": "[1, 2]"})
    assert (cfg.max_regions, cfg.sampling, cfg.weights, cfg.max_text_len) == (20, "dataset", [1.0, 2.0], 40)
    with pytest.raises(ConfigError, match="valid: instance, dataset"):
        DataConfig(sampling="epoch")
    with pytest.raises(ConfigError, match="max_regions"):
        DataConfig(max_regions=0)
    with pytest.raises(ConfigError, match="weights"):
        DataConfig(weights=[-1.0, 1.0])
