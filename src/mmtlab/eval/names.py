"""The names evaluation accepts, torch-free (the command line's choices and the grid's check read them)."""

SCORERS = ("exhaustive", "rerank", "dual")  # the ways to score a split (mmtlab.eval.retrieval.SCORE_SPLIT)
PROTOCOLS = ("zero-shot", "fine-tuned")
