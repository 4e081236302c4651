#!/usr/bin/env bash
# The GPU speed check of issue 7, in one go (< 7 minutes on one H100/H200): bf16 correctness of our model,
# then base scale (width 768, 40 word pieces, 36 regions x 2048-d), batch 128, eager and torch.compile,
# ours vs HF VisualBERT and HF LXMERT (train samples/s, scoring pairs/s, MFU), and our models alone at batch
# 512 for MFU. Run from the repository root:  bash scripts/gpu_bench.sh   (results: $OUT/*.json, default ./gpu-bench)
# Needs python3 with torch and transformers; mmtlab need not be installed (PYTHONPATH=src). Without CUDA it runs
# the same steps on CPU at tiny scale (a smoke test of this script).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-bench}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
START=$(date +%s)

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  DEV="--device cuda --scale base"; B=128; BIG=512; STEPS=10; WARM=3; SLOW=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
  echo "no CUDA: smoke test on CPU at tiny scale"
  DEV="--device cpu --scale tiny"; B=4; BIG=8; STEPS=2; WARM=1; NO_COMPILE=1; SLOW=5  # a shared CPU: longer limits
fi
"$PY" -c "import torch, transformers, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'transformers', transformers.__version__)" \
  || { echo "!! $PY lacks torch or transformers (set PYTHON=/path/to/python)"; exit 1; }

# run NAME LIMIT_S ARGS...: one bench run, killed past LIMIT_S so one slow compile cannot eat the others' time
run() {
  local name=$1 limit=$2; shift 2
  if [[ -n "${NO_COMPILE:-}" && " $* " == *" --compile "* ]]; then echo "== $name: skipped on CPU (compiling takes minutes)"; return; fi
  echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s elapsed)"
  timeout --signal=INT --kill-after=10 $(( limit * SLOW )) "$PY" -m mmtlab.cli bench $DEV --steps $STEPS --warmup $WARM \
    --out "$OUT/$name.json" "$@" 2> >(grep -v "^ours vs" >&2) || echo "!! $name failed or timed out (rc $?)"
}

run eager_b$B                 60 --batch $B
run eager_b${B}_no_last_rows  40 --batch $B --ablate last-rows --compare visualbert  # what the last-rows lever (host syncs) nets on GPU
run compile_visualbert_b$B   100 --batch $B --compile --compare visualbert
run compile_lxmert_b$B       100 --batch $B --compile --compare lxmert
run eager_ours_b$BIG          30 --batch $BIG --no-peers
run compile_ours_b$BIG        60 --batch $BIG --no-peers --compile

echo "== summary ($(( $(date +%s) - START ))s in all)"
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    mode = {"none": "eager", "all": "compiled", "ours": "ours compiled, HF eager"}[r["compile"]]
    mode += f" (ablated: {','.join(r['ablate'])})" if r["ablate"] else ""
    if "bf16_check" in r:
        c = r["bf16_check"]
        print(f"bf16 check ({path.name}): states rel err {c['states_rel_err']:.2e}, ITM logits max diff "
              f"{c['itm_logits_max_abs_diff']:.2e} -> {'ok' if c['ok'] else 'MISMATCH'}")
    for row in r["comparisons"]:
        for who in ("ours", "theirs"):
            if who in row:
                e = row[who]
                mfu = f"{100 * e['mfu']:.1f}%" if e["mfu"] is not None else "n/a"
                ratio = f"{row['ratio_train']:.2f}x / {row['ratio_score']:.2f}x" if who == "ours" and "ratio_train" in row else ""
                rows.append((e["name"].split(" (")[0], mode, str(r["batch"]), f"{e['train_samples_per_s']:,.1f}",
                             f"{e['score_pairs_per_s']:,.1f}", mfu, ratio))
# the issue's GPU target compares ours compiled with HF eager: across the eager and compiled runs at batch B
by_mode = {}
for path in pathlib.Path(sys.argv[1]).glob("*.json"):
    r = json.loads(path.read_text())
    for row in r["comparisons"] if not r["ablate"] else []:
        by_mode[(r["compile"], r["batch"], row["comparison"])] = row
for (mode, batch, comp), row in sorted(by_mode.items()):
    eager = by_mode.get(("none", batch, comp))
    if mode == "all" and eager and "theirs" in eager:
        print(f"{comp}, batch {batch}: ours compiled / HF eager = train {row['ours']['train_samples_per_s'] / eager['theirs']['train_samples_per_s']:.2f}x, "
              f"score {row['ours']['score_pairs_per_s'] / eager['theirs']['score_pairs_per_s']:.2f}x")
head = ("contender", "mode", "batch", "train samples/s", "score pairs/s", "MFU", "ours/theirs train / score")
w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
for x in [head] + rows:
    print("  ".join(s.ljust(n) for s, n in zip(x, w)))
PYEOF
