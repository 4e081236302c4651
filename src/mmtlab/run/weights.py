"""A model's weights as safetensors: written atomically, read without executing pickled code, checked against
the model they are loaded into (docs/design.md, "The run directory")."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..config import ConfigError
from ..errors import MmtlabError
from .layout import CKPT, OLD


class CheckpointError(MmtlabError, ValueError):
    """A checkpoint or weights file is damaged or was not written by mmtlab; the message names it."""


def save_weights(model: torch.nn.Module, path: Path) -> None:
    """``model``'s state dict as safetensors, atomically (temporary name, then rename)."""
    tmp = path.with_name(path.name + ".tmp")
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, path)


def load_weights(model: torch.nn.Module, path: Path) -> None:
    """Load safetensors weights into ``model``; a key or shape mismatch is a one-line ConfigError, a damaged
    file a :class:`CheckpointError`."""
    try:
        state = load_file(str(path), device=str(next(model.parameters()).device))
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: damaged weights file ({e}); {way_out(Path(path))}") from None
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    if missing or unexpected:
        what = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise ConfigError(f"{path}: weights do not fit this model ({what}); the run's config.yaml and weights disagree")
    for k, v in state.items():
        if v.shape != own[k].shape:
            raise ConfigError(f"{path}: {k} has shape {tuple(v.shape)}, the model expects {tuple(own[k].shape)}")
    model.load_state_dict(state)


def way_out(path: Path) -> str:
    """What to do about a damaged file of a run: a checkpoint is moved aside, a finished model retrained."""
    if path.parent.name in (CKPT, OLD):
        return f"move {path.parent} aside and `mmtlab train --resume {path.parent.parent}` starts the run again from step 0"
    return f"restore it, or train the run again (`mmtlab train --resume {path.parent}` if it has a checkpoint)"
