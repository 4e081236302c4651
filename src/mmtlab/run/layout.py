"""The names in a run directory that more than one module reads (docs/design.md, "The run directory")."""

CKPT, TMP, OLD, PREV, DIVERGED = (
    "checkpoint",
    "checkpoint.tmp",
    "checkpoint.old",
    "checkpoint.prev",
    "checkpoint.diverged",
)
FINETUNE_FILE = "finetune.json"  # in runs made by `mmtlab finetune retrieval`
