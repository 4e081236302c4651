"""Initialise the text stream from a local Hugging Face BERT checkpoint (the paper's "cc-with-bert").

Reads ``config.json`` and ``model.safetensors`` (or ``pytorch_model.bin`` with ``weights_only=True``) from a
directory; nothing is downloaded. BERT layer ``i`` goes into the text-stream weights of layer ``i`` (for a
single-stream model, into the shared weights); the embeddings into the text embedding (the MLM decoder is
tied to them); BERT's pooler into the ITM text pooler.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..config import ConfigError, ModelConfig


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if (path / "model.safetensors").is_file():
        from safetensors.torch import load_file

        state = load_file(str(path / "model.safetensors"))
    elif (path / "pytorch_model.bin").is_file():
        state = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ConfigError(f"model.text_init={path}: no model.safetensors or pytorch_model.bin in that directory")
    # BertForPreTraining & co. prefix the encoder with "bert."
    return {k.removeprefix("bert."): v for k, v in state.items()}


def check_compatible(path: Path, cfg: ModelConfig) -> dict:
    cfg_file = path / "config.json"
    if not cfg_file.is_file():
        raise ConfigError(f"model.text_init={path}: not a Hugging Face BERT directory (no config.json)")
    hf = json.loads(cfg_file.read_text())
    wanted = {
        "hidden_size": ("width", cfg.width),
        "intermediate_size": ("ffn", cfg.ffn),
        "num_attention_heads": ("heads", cfg.heads),
        "vocab_size": ("vocab_size", cfg.vocab_size),
    }
    for hf_key, (ours, value) in wanted.items():
        if hf.get(hf_key) != value:
            raise ConfigError(
                f"model.text_init={path}: the checkpoint has {hf_key}={hf.get(hf_key)} but model.{ours}={value}; "
                f"set model.{ours}={hf.get(hf_key)}"
            )
    if hf.get("max_position_embeddings", 0) < cfg.max_positions:
        raise ConfigError(
            f"model.text_init={path}: only {hf.get('max_position_embeddings')} positions, model.max_positions={cfg.max_positions}"
        )
    return hf


@torch.no_grad()
def load_bert_into(model: torch.nn.Module, path: str | Path) -> int:
    """Copy BERT weights into ``model``'s text stream; returns the number of BERT layers used."""
    path = Path(path)
    if not path.is_dir():
        raise ConfigError(f"model.text_init={path}: directory not found")
    cfg: ModelConfig = model.config
    hf = check_compatible(path, cfg)
    sd = _read_state(path)

    emb = model.text_embed
    words = sd["embeddings.word_embeddings.weight"]
    emb.word.weight.copy_(words if cfg.vocab_ids is None else words[cfg.vocab_ids])
    emb.position.weight.copy_(sd["embeddings.position_embeddings.weight"][: cfg.max_positions])
    emb.segment.weight.copy_(sd["embeddings.token_type_embeddings.weight"][: cfg.type_vocab_size])
    emb.norm.weight.copy_(sd["embeddings.LayerNorm.weight"])
    emb.norm.bias.copy_(sd["embeddings.LayerNorm.bias"])

    n = min(hf["num_hidden_layers"], cfg.layers)
    for i in range(n):
        p = f"encoder.layer.{i}."
        w = model.layers[i].weights(0)
        a = p + "attention.self."
        w.qkv.weight.copy_(torch.cat([sd[a + "query.weight"], sd[a + "key.weight"], sd[a + "value.weight"]]))
        w.qkv.bias.copy_(torch.cat([sd[a + "query.bias"], sd[a + "key.bias"], sd[a + "value.bias"]]))
        pairs = {
            w.out: "attention.output.dense",
            w.attn_norm: "attention.output.LayerNorm",
            w.ffn_in: "intermediate.dense",
            w.ffn_out: "output.dense",
            w.ffn_norm: "output.LayerNorm",
        }
        for module, name in pairs.items():
            module.weight.copy_(sd[p + name + ".weight"])
            module.bias.copy_(sd[p + name + ".bias"])
    if "pooler.dense.weight" in sd:
        model.itm[-1].text_pool.weight.copy_(sd["pooler.dense.weight"])
        model.itm[-1].text_pool.bias.copy_(sd["pooler.dense.bias"])
    return n
