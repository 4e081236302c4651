"""Pretraining loader: determinism, resume, ranks, workers, mixtures."""

import numpy as np
import pytest
import torch

from mmtlab.config import ConfigError
from mmtlab.data import (
    DataError,
    build_train_loader,
    collate_images,
    collate_texts,
    get_tokenizer,
    open_store,
    synthesize,
)
from mmtlab.data.loader import mixture_probs
from test_data_store import write_small


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    d = tmp_path_factory.mktemp("loader")
    return [
        open_store(synthesize(d / "coco", "coco", n=40, seed=1)),
        open_store(synthesize(d / "vg", "vg", n=10, seed=1)),
    ]


def take(loader, n):
    return [next(loader) for _ in range(n)]


def same(a, b):
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_batch_contract(stores):
    b = next(build_train_loader(stores[:1], 4, seed=0, max_text_len=12, max_regions=3, with_pixels=True))
    assert (
        b["text_ids"].shape[0] == 4 and b["text_ids"].shape[1] <= 12 and b["text_word_ids"].shape == b["text_ids"].shape
    )
    assert b["img_feats"].shape == (4, 4, 256) and b["img_mask"].shape == (4, 4) and b["img_boxes"].shape == (4, 4, 5)
    assert b["img_cls"].shape == (4, 4, 68) and b["pixels"].shape == (4, 3, 64, 64)
    assert 0 <= b["pixels"].min() and b["pixels"].max() <= 1
    s = stores[0]
    for k in range(4):  # each sample is the stored pair it names
        c, i = int(b["caption_index"][k]), int(b["image_index"][k])
        assert s.caption_image[c] == i and b["dataset_index"][k] == 0
        single = collate_images(s, [i], max_regions=3)["img_feats"][0]
        torch.testing.assert_close(b["img_feats"][k, : len(single)], single)
        assert b["img_feats"][k, len(single) :].abs().sum() == 0
        text = collate_texts(get_tokenizer(), [s.captions[c]], 12)["text_ids"][0]
        assert torch.equal(b["text_ids"][k, : len(text)], text)


def test_deterministic_and_resumable(stores):
    a = take(build_train_loader(stores, 3, seed=5), 6)
    b = take(build_train_loader(stores, 3, seed=5), 6)
    assert all(same(x, y) for x, y in zip(a, b))
    resumed = build_train_loader(stores, 3, seed=5, start_batch=4)
    assert same(next(resumed), a[4]) and same(next(resumed), a[5]) and resumed.batch_index == 6
    other = take(build_train_loader(stores, 3, seed=6), 2)
    assert not same(other[0], a[0])


def test_ranks_partition_the_global_stream(stores):
    one = take(build_train_loader(stores, 2, seed=3), 6)  # positions [2j, 2j+2)
    r0 = take(build_train_loader(stores, 2, seed=3, rank=0, world_size=2), 3)
    r1 = take(build_train_loader(stores, 2, seed=3, rank=1, world_size=2), 3)
    for k in range(3):
        assert same(r0[k], one[2 * k]) and same(r1[k], one[2 * k + 1])


def test_workers_give_the_same_stream(stores):
    a = take(build_train_loader(stores, 4, seed=2, start_batch=1), 3)
    b = take(build_train_loader(stores, 4, seed=2, start_batch=1, num_workers=2), 3)
    assert all(same(x, y) for x, y in zip(a, b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs a CUDA device")
def test_pinned_batches_for_a_gpu(stores):
    """pin_memory (the trainer sets it on CUDA): the same stream, in page-locked memory."""
    a = take(build_train_loader(stores, 4, seed=2), 2)
    b = take(build_train_loader(stores, 4, seed=2, pin_memory=True), 2)
    assert all(same(x, y) for x, y in zip(a, b)) and all(v.is_pinned() for v in b[0].values())


def test_mixture_sampling_and_counts(stores):
    sizes = [len(s) for s in stores]  # coco 200 pairs, vg ~100
    np.testing.assert_allclose(mixture_probs(sizes, "instance", None), np.array(sizes) / sum(sizes))
    np.testing.assert_allclose(mixture_probs(sizes, "dataset", None), [0.5, 0.5])
    np.testing.assert_allclose(mixture_probs(sizes, "dataset", [3, 1]), [0.75, 0.25])
    np.testing.assert_allclose(mixture_probs([10, 30], "instance", [1, 2]), [1 / 7, 6 / 7])
    loader = build_train_loader(stores, 50, seed=0, sampling="dataset")
    take(loader, 20)
    assert sum(loader.counts) == 1000 and abs(loader.counts[0] - 500) < 60  # binomial sd ~16
    only = build_train_loader(stores, 8, seed=0, weights=[0, 1])
    b = next(only)
    assert (b["dataset_index"] == 1).all() and only.counts == [0, 8]
    with pytest.raises(ConfigError, match="one non-negative weight per dataset"):
        build_train_loader(stores, 8, weights=[1])
    with pytest.raises(ConfigError, match="valid: instance, dataset"):
        build_train_loader(stores, 8, sampling="uniform")


def test_mixture_errors(stores, tmp_path):
    small = open_store(write_small(tmp_path / "s"))  # feat_dim 4
    with pytest.raises(DataError, match="different feature widths"):
        build_train_loader([stores[0], small], 2)
    nopix = open_store(write_small(tmp_path / "n", with_pixels=False))
    with pytest.raises(DataError, match=r"/n: the model reads pixels .*holds no pixels.*--pixels 64"):
        build_train_loader([nopix], 2, with_pixels=True)
    with pytest.raises(DataError, match="no such dataset directory"):
        build_train_loader([tmp_path / "missing"], 2)
