"""Retrieval metrics on hand-built score matrices (mmtlab.eval.metrics)."""

import pytest
import torch

from mmtlab.eval import retrieval_metrics
from mmtlab.eval.metrics import EvalError, image_to_text_ranks, text_to_image_ranks

FIVE = torch.arange(4).repeat_interleave(5)  # 4 images x 5 captions, caption c belongs to image c // 5


def perfect(caption_image, n_images):
    return (caption_image[:, None] == torch.arange(n_images)[None]).float()


def test_perfect_scorer_five_captions():
    m = retrieval_metrics(perfect(FIVE, 4), FIVE)
    assert (m["n_images"], m["n_captions"], m["notes"]) == (4, 20, [])
    for d in ("text_to_image", "image_to_text"):
        assert m[d] == {"R@1": 100.0, "R@5": 100.0, "R@10": 100.0, "median_rank": 1.0, "mean_rank": 1.0}


def test_worst_scorer():
    # Each caption scores its own image lowest: rank 4 of 4 images; each image's own captions come last:
    # 15 wrong captions above them -> best rank 16.
    m = retrieval_metrics(-perfect(FIVE, 4), FIVE)
    assert m["text_to_image"] == {"R@1": 0.0, "R@5": 100.0, "R@10": 100.0, "median_rank": 4.0, "mean_rank": 4.0}
    assert m["image_to_text"] == {"R@1": 0.0, "R@5": 0.0, "R@10": 0.0, "median_rank": 16.0, "mean_rank": 16.0}


def test_constant_scorer_is_pessimistic():
    m = retrieval_metrics(torch.zeros(20, 4), FIVE)
    assert m["text_to_image"]["R@1"] == 0.0 and m["text_to_image"]["mean_rank"] == 4.0
    assert m["image_to_text"]["mean_rank"] == 16.0  # ties with its own captions do not count against


def test_ties_hand_computed():
    # 3 captions, 3 images, caption i -> image i.
    s = torch.tensor(
        [
            [0.9, 0.9, 0.1],  # tie with a wrong image -> rank 2
            [0.2, 0.5, 0.5],  # tie -> rank 2
            [0.3, 0.1, 0.4],  # clear -> rank 1
        ]
    )
    ci = torch.tensor([0, 1, 2])
    assert text_to_image_ranks(s, ci).tolist() == [2, 2, 1]
    # image 0 column: own 0.9, wrong 0.2, 0.3 -> 1; image 1: own 0.5, wrong 0.9 -> 2; image 2: own 0.4, wrong 0.5 -> 2
    assert image_to_text_ranks(s, ci).tolist() == [1, 2, 2]
    m = retrieval_metrics(s, ci)
    assert m["text_to_image"]["R@1"] == pytest.approx(100 / 3)
    assert m["text_to_image"]["median_rank"] == 2.0
    assert m["text_to_image"]["mean_rank"] == pytest.approx(5 / 3)
    assert m["image_to_text"]["R@1"] == pytest.approx(100 / 3)


def test_image_to_text_hit_if_any_caption_in_top_k():
    # image 0 has captions 0, 1; caption 1 scores best for image 0, caption 0 worst.
    s = torch.tensor([[0.0, 0.7], [0.9, 0.0], [0.2, 0.5], [0.1, 0.8]])
    ci = torch.tensor([0, 0, 1, 1])
    assert image_to_text_ranks(s, ci).tolist() == [1, 1]
    # text->image: caption 0 ranks image 1 above its own.
    assert text_to_image_ranks(s, ci).tolist() == [2, 1, 1, 1]


def test_median_of_even_count_and_recall_at_5_10():
    # 12 images, one caption each; caption i's true image gets rank i+1 by construction.
    n = 12
    s = torch.zeros(n, n)
    for i in range(n):
        s[i] = torch.arange(n, 0, -1).float()  # image 0 best ... image 11 worst
    ci = torch.arange(n)
    m = retrieval_metrics(s, ci)["text_to_image"]
    assert m["R@1"] == pytest.approx(100 / 12)
    assert m["R@5"] == pytest.approx(500 / 12)
    assert m["R@10"] == pytest.approx(1000 / 12)
    assert m["median_rank"] == 6.5
    assert m["mean_rank"] == 6.5


def test_uneven_captions_are_noted():
    ci = torch.tensor([0, 0, 1, 2, 2, 2])
    m = retrieval_metrics(perfect(ci, 4), ci)
    assert any("not 5 captions per image" in n for n in m["notes"])
    assert any("1 image(s) without captions" in n for n in m["notes"])
    assert m["image_to_text"]["R@1"] == 100.0  # the caption-less image is not a query


@pytest.mark.parametrize(
    "scores, ci, match",
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), "empty split"),
        (torch.zeros(3, 0), torch.zeros(3, dtype=torch.long), "empty split"),
        (torch.zeros(3), torch.zeros(3, dtype=torch.long), "matrix"),
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), r"shape \(3,\)"),
        (torch.zeros(2, 2), torch.tensor([0, 2]), "valid: 0..1"),
        (torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]), "NaN"),
        (torch.zeros(2, 2), torch.tensor([0.0, 1.0]), "integer"),
    ],
)
def test_bad_input_raises(scores, ci, match):
    with pytest.raises(EvalError, match=match):
        retrieval_metrics(scores, ci)
    assert issubclass(EvalError, ValueError)


def test_imports_stay_light():
    """``mmtlab eval`` registration imports no torch; the metrics need neither the data layer nor the trainer."""
    import subprocess
    import sys

    code = (
        "import sys, mmtlab.eval.cli; assert 'torch' not in sys.modules, 'torch'; "
        "import mmtlab.eval.metrics; bad = [m for m in sys.modules if m.startswith(('mmtlab.data', 'mmtlab.train'))]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
