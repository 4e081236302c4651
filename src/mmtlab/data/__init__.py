"""mmtlab.data: the synthetic world, readers for real corpora, the memory-mapped store, tokenisation, collation
and dataset mixtures (docs/design.md, "The store", "Loading batches"; docs/data.md).

Importing this package loads numpy but not torch: the collators and the loader load on first use.
"""

from __future__ import annotations

from .config import DataConfig
from .importer import import_dataset
from .store import DataError, Store, StoreWriter, open_store
from .synth import STYLES, synthesize
from .tokenizer import get_tokenizer

_TORCH = {"collate_texts": ".collate", "collate_images": ".collate", "build_train_loader": ".loader", "TrainLoader": ".loader"}  # fmt: skip


def __getattr__(name: str):
    if name in _TORCH:
        import importlib

        return getattr(importlib.import_module(_TORCH[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DataConfig",
    "DataError",
    "STYLES",
    "Store",
    "StoreWriter",
    "TrainLoader",
    "build_train_loader",
    "collate_images",
    "collate_texts",
    "get_tokenizer",
    "import_dataset",
    "open_store",
    "synthesize",
]
