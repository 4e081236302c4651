"""The peers: Hugging Face VisualBERT and LXMERT at the benchmark's shape (``transformers`` is a benchmark-only
extra, imported here), and their model FLOPs per training sample."""

from __future__ import annotations

from ..config import ConfigError
from .inputs import VOCAB, score_pairs
from .ours import Contender, _in_mode, _n, _no_grad, _train_step


def _hf(kind: str, shape: dict, inputs: dict, score_inputs: dict, device, compile: bool, bf16: bool) -> Contender:
    import torch

    from ..device import autocast
    from ..model import compile_fn

    try:
        import transformers
    except ImportError as e:
        raise ConfigError(
            "mmtlab bench needs the benchmark-only extra 'transformers' for the peers; install it with "
            "`pip install 'mmtlab[bench]'` (or transformers>=4.40)"
        ) from e

    R = shape["regions"]
    common = dict(
        vocab_size=VOCAB, hidden_size=shape["width"], num_attention_heads=shape["heads"], intermediate_size=shape["ffn"]
    )
    B = inputs["text_ids"].shape[0]
    mlm_labels = torch.where(inputs["mlm_mask"], inputs["text_ids"], -100)  # (B, T)
    ids, tmask = inputs["text_ids"], inputs["text_mask"].long()
    feats, vmask = inputs["img_feats"], inputs["img_mask"].long()
    if kind == "visualbert":
        cfg = transformers.VisualBertConfig(num_hidden_layers=12, visual_embedding_dim=shape["feat_dim"], **common)
        model = transformers.VisualBertForPreTraining(cfg)
        ignore = torch.full((B, R), -100, dtype=torch.long, device=device)

        def forward(ids, tmask, feats, boxes, vmask, labels=None, itm=None):
            out = model(
                input_ids=ids,
                attention_mask=tmask,
                visual_embeds=feats,
                visual_attention_mask=vmask,
                labels=labels,
                sentence_image_labels=itm,
            )
            return out.loss if labels is not None else out.seq_relationship_logits

        labels = torch.cat([mlm_labels, ignore], dim=1)  # VisualBERT's labels cover the T + R positions
    else:
        cfg = transformers.LxmertConfig(
            l_layers=9,
            x_layers=5,
            r_layers=5,
            visual_feat_dim=shape["feat_dim"],
            visual_pos_dim=4,
            task_obj_predict=False,
            task_qa=False,
            **common,
        )
        model = transformers.LxmertForPreTraining(cfg)

        def forward(ids, tmask, feats, boxes, vmask, labels=None, itm=None):
            out = model(
                input_ids=ids,
                attention_mask=tmask,
                visual_feats=feats,
                visual_pos=boxes[..., :4],
                visual_attention_mask=vmask,
                labels=labels,
                matched_label=itm,
            )
            return out.loss if labels is not None else out.cross_relationship_score

        labels = mlm_labels
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    boxes = inputs["img_boxes"]

    def loss_fn() -> torch.Tensor:
        with autocast(device, bf16):
            return forward(ids, tmask, feats, boxes, vmask, labels, inputs["itm_labels"])

    cap, img = score_pairs(score_inputs["text_ids"].shape[0], device)
    pool = (
        score_inputs["text_ids"],
        score_inputs["text_mask"].long(),
        score_inputs["img_feats"],
        score_inputs["img_boxes"],
        score_inputs["img_mask"].long(),
    )
    pairs = tuple(x[i] for x, i in zip(pool, (cap, cap, img, img, img)))  # pre-gathered, outside the timing

    def score_fn() -> torch.Tensor:
        with autocast(device, bf16):
            return forward(*pairs)

    if compile:
        loss_fn, score_fn = compile_fn(loss_fn), compile_fn(score_fn, freeze=True)
    return Contender(
        name=f"HF {type(model).__name__} (transformers {transformers.__version__}, "
        f"attn={getattr(model.config, '_attn_implementation', None)})",
        model=model,
        params=_n(model),
        train=_in_mode(model, True, _train_step(loss_fn, optimizer)),
        score=_in_mode(model, False, _no_grad(score_fn)),
        train_flops=_hf_flops(kind, model, shape, int(inputs["mlm_mask"][0].sum())),
    )


def _hf_flops(kind: str, model, shape: dict, n_mlm: int) -> float:
    T, R = shape["text_len"], shape["regions"]
    head = (_n(model.cls.predictions.transform) + VOCAB * shape["width"]) * n_mlm
    if kind == "visualbert":
        vb = model.visual_bert
        per_pass = _n(vb.encoder) * (T + R) + _n(vb.embeddings.visual_projection) * R + _n(vb.pooler) + head
    else:
        enc = model.lxmert.encoder
        per_pass = _n(enc.layer) * T + _n(enc.r_layers) * R + _n(enc.visn_fc) * R + _n(model.lxmert.pooler) + head
        for x in enc.x_layers:
            per_pass += _n(x.visual_attention) * (T + R)
            per_pass += sum(
                _n(getattr(x, f"lang_{m}")) * T + _n(getattr(x, f"visn_{m}")) * R
                for m in ("self_att", "inter", "output")
            )
    return 6.0 * (per_pass + _n(model.cls.seq_relationship))
