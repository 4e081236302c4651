"""Retrieval fine-tuning: hard negatives are the model's own top-scoring wrong pairs; the fine-tuned run
starts from the pretrained weights and is evaluated as "fine-tuned"."""

import json

import pytest
import torch

import mmtlab
from mmtlab.data.store import DataError
from mmtlab.data.synth import synthesize
from mmtlab.eval.retrieval import evaluate_run
from mmtlab.train.finetune import HardNegativeITMLoss, finetune_info, finetune_retrieval, mine_hard_negatives
from mmtlab.train.losses import match_score
from mmtlab.train.trainer import load_run
from test_eval_retrieval import FEAT, make_run

B = 5


def batch():
    g = torch.Generator().manual_seed(0)
    mask = torch.ones(B, 6, dtype=torch.bool)
    mask[1, 4:] = False
    return {
        "text_ids": torch.randint(1000, 2000, (B, 6), generator=g), "text_mask": mask,
        "img_feats": torch.randn(B, 4, FEAT, generator=g), "img_boxes": torch.rand(B, 4, 5, generator=g),
        "img_mask": torch.ones(B, 4, dtype=torch.bool), "image_index": torch.tensor([0, 1, 1, 2, 3]),
    }  # fmt: skip


@torch.no_grad()
def all_pair_scores(model, b):
    ci, ii = torch.arange(B).repeat_interleave(B), torch.arange(B).repeat(B)
    pairs = {k: b[k][ci] for k in ("text_ids", "text_mask")} | {
        k: b[k][ii] for k in ("img_feats", "img_boxes", "img_mask")
    }
    return match_score(model(pairs)["itm_logits"]).view(B, B)


@pytest.mark.parametrize("preset", ["merged", "mixed-modality"])
def test_hard_negatives_are_the_top_scoring_other_pictures(preset):
    torch.manual_seed(0)
    model = mmtlab.build_model(preset, scale="tiny", feat_dim=FEAT).eval()
    b = batch()
    hard_image, hard_caption = mine_hard_negatives(model, b)
    s = all_pair_scores(model, b)
    same = b["image_index"][:, None] == b["image_index"][None]  # pairs 1 and 2 show the same picture
    s[same] = float("-inf")
    assert hard_image.tolist() == s.argmax(1).tolist()
    assert hard_caption.tolist() == s.argmax(0).tolist()
    assert hard_image[1] not in (1, 2) and hard_caption[2] not in (1, 2)


def test_hard_negative_loss_trains_and_rejects_one_picture_batches():
    torch.manual_seed(0)
    model = mmtlab.build_model("merged", scale="tiny", feat_dim=FEAT)
    loss, terms = HardNegativeITMLoss()(model, batch(), step=0)
    loss.backward()
    assert torch.isfinite(loss) and set(terms) == {"itm-hard", "itm-hard-acc"}
    assert model.itm[-1].classifier.weight.grad.abs().sum() > 0
    one = batch() | {"image_index": torch.zeros(B, dtype=torch.long)}
    with pytest.raises(ValueError, match="2 different pictures"):
        HardNegativeITMLoss()(model, one, step=0)


def test_finetune_starts_from_the_run_and_evaluates_as_fine_tuned(tmp_path):
    train_store = synthesize(tmp_path / "ft", style="flickr", n=8, seed=1, split="train", feat_dim=FEAT)
    test_store = synthesize(tmp_path / "te", style="flickr", n=4, seed=2, feat_dim=FEAT)
    run = make_run(tmp_path / "run", "mixed-modality", "itm+mlm")
    out = tmp_path / "run-ft"
    finetune_retrieval(
        run,
        train_store,
        out,
        overrides={"train.steps": 1, "train.batch_size": 8, "train.lr": 1e-12, "train.progress": False},
    )
    info = finetune_info(out)
    assert info["task"] == "retrieval" and info["from_run"] == str(run.resolve())
    before = load_run(run)[0].state_dict()
    after = load_run(out)[0].state_dict()
    for k in before:  # one step at lr 1e-12: the pretrained weights, not a fresh initialisation
        torch.testing.assert_close(after[k], before[k], atol=1e-6, rtol=0)
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 1
    r = evaluate_run(out, test_store, progress=False)
    assert r["protocol"] == "fine-tuned" and r["finetuned_from"] == str(run.resolve())
    with pytest.raises(DataError, match="no split .train."):
        finetune_retrieval(run, test_store, tmp_path / "bad")
