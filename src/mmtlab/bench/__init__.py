"""``mmtlab bench``: our models against the implementations people use today, in one process on one device.

Two comparisons (docs/design.md, "Benchmark shape"; issue 7), each at the same width / heads / FFN, batch, text
length and regions:

* ours ``single-stream`` at 12 layers (``M`` x 12, ``shared: true``) vs Hugging Face ``VisualBertForPreTraining``;
* ours two-stream ``U`` x 9 + ``C`` x 5 vs HF ``LxmertForPreTraining`` (9 language + 5 object + 5 cross layers).
  The mapping keeps LXMERT's text depth (9 + 5 = 14 layers) and its per-sample FLOPs: an LXMERT cross layer is
  cross-attention + self-attention + FFN per stream, 16 D^2 per token against our layer's 12 D^2, so its
  9 x 12 x T + 5 x 12 x R + 5 x 16 x (T + R) = 12,560 D^2 per sample (T = 40, R = 36) matches our
  14 x 12 x (T + R) = 12,768 D^2 within 2%. The 9 leading ``U`` layers are the unimodal prefix.

Two workloads, both timed as the median of ``--steps`` iterations after ``--warmup`` untimed ones, with the
contenders of a comparison interleaved iteration by iteration (so a busy shared CPU slows both alike):

* **train**: MLM (15% of the word pieces) + ITM cross-entropy, backward, AdamW step. HF models get the labels
  their API takes (MLM labels -100 except at the masked positions); ours gets ``mlm_mask`` and computes MLM
  logits only there. AdamW is ``fused`` for ours where the device supports it, the default for HF.
* **score**: ITM scoring of a block of caption x image pairs (16 captions x ``batch / 16`` images, as in
  exhaustive retrieval), forward only, no grad. HF models run every pair through ``ForPreTraining`` (their only
  class with the ITM head), inputs pre-gathered per pair outside the timing; ours encodes each caption and image
  once (the unimodal cache: :meth:`~mmtlab.model.MultimodalTransformer.encode_text`) and runs the remaining
  layers per pair (:meth:`~mmtlab.model.MultimodalTransformer.match_logits`).

On CUDA every contender runs under bf16 autocast, on CPU in fp32 unless ``--precision bf16``. MFU (CUDA only)
= model FLOP/s / peak, where the model FLOPs of a training sample are ``6 x sum(parameters of each matmul x
tokens it is applied to)``: the layer stack on the T + R tokens of its stream(s), the region-feature projection
on R, the MLM head on the masked positions only, the ITM head once; attention-score FLOPs (about 2% here) and
embeddings lookups are not counted. The peak is 989 TFLOP/s dense bf16 for H100 SXM and H200
(``--peak-tflops`` overrides).

Scales: ``paper`` (``base`` is accepted for it) takes width, heads and FFN from the ``paper`` model config (768,
12, 3072) and the paper's inputs (40 word pieces, 36 regions x 2,048-d); ``tiny`` keeps the layer counts at the
``tiny`` model config's width 128, 4 heads, FFN 512, with 16 word pieces and 10 regions x 256-d.

Modules: :mod:`~mmtlab.bench.inputs` (shapes and random inputs), :mod:`~mmtlab.bench.ours` and
:mod:`~mmtlab.bench.peers` (the contenders and their FLOPs), :mod:`~mmtlab.bench.timing` (interleaved timing,
bf16 check, profile, peak FLOP/s), :mod:`~mmtlab.bench.run` (:func:`run_bench`, :func:`format_table`),
:mod:`~mmtlab.bench.cli` (``mmtlab bench``).

``transformers`` is a benchmark-only extra, imported lazily.
"""

from .inputs import SCALE_ALIASES, VOCAB, bench_scale, bench_shape, make_inputs, score_pairs
from .ours import ABLATIONS, SINGLE_SCHEDULE, TWO_STREAM_SCHEDULE
from .run import COMPARISONS, COMPILE_MODES, PRECISIONS, format_table, run_bench
from .timing import check_bf16, peak_for_name

__all__ = [
    "ABLATIONS",
    "COMPARISONS",
    "COMPILE_MODES",
    "PRECISIONS",
    "SCALE_ALIASES",
    "SINGLE_SCHEDULE",
    "TWO_STREAM_SCHEDULE",
    "VOCAB",
    "bench_scale",
    "bench_shape",
    "check_bf16",
    "format_table",
    "make_inputs",
    "peak_for_name",
    "run_bench",
    "score_pairs",
]
