#!/usr/bin/env bash
# The GPU check of issue 7, in one go (at most $DEADLINE s, default 540, on one H100/H200): tests/test_cuda.py
# (compiled bf16 training forward as one graph, bf16 training, the unimodal cache), bf16 correctness of our
# model, then base scale (width 768, 40 word pieces, 36 regions x 2048-d), batch 128: everything eager,
# then ours compiled against HF eager (the issue's target, measured interleaved in one process), our single stream
# compiled at batch 512 for MFU, and the rest. The most important stages run first; each has its own time limit,
# clipped to what is left of the deadline, and a stage killed midway keeps the comparisons it finished.
# Run from the repository root:  bash scripts/gpu_bench.sh 2>&1 | tee "$OUT/log.txt"
# (results: $OUT/*.json; $OUT defaults to ./gpu-bench). Needs python3 with torch and transformers; mmtlab need
# not be installed (PYTHONPATH=src). Without CUDA it runs the same steps on CPU at tiny scale (a smoke test).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-gpu-bench}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-python3}"
START=$(date +%s)
DEADLINE="${DEADLINE:-540}"  # the device tool allows 600 s per command

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
  DEV="--device cuda --scale base"; B=128; BIG=512; STEPS=10; WARM=3; SLOW=1
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
else
  echo "no CUDA: smoke test on CPU at tiny scale"
  DEV="--device cpu --scale tiny"; B=4; BIG=8; STEPS=2; WARM=1; NO_COMPILE=1; SLOW=5  # a shared CPU: longer limits
fi
"$PY" -c "import torch, transformers, platform; print('python', platform.python_version(), 'torch', torch.__version__, 'transformers', transformers.__version__)" \
  || { echo "!! $PY lacks torch or transformers (set PYTHON=/path/to/python)"; exit 1; }

# run NAME LIMIT_S ARGS...: one bench run, killed past LIMIT_S (or what is left of the deadline)
run() {
  local name=$1 limit=$(( $2 * SLOW )); shift 2
  if [[ -n "${NO_COMPILE:-}" && " $* " == *" --compile "* ]]; then echo "== $name: skipped on CPU (compiling takes minutes)"; return; fi
  local left=$(( DEADLINE - ($(date +%s) - START) - 15 ))
  if (( left < 20 )); then echo "== $name: skipped, the deadline is near"; return; fi
  (( limit > left )) && limit=$left
  echo "== $name (limit ${limit}s, $(( $(date +%s) - START ))s elapsed)"
  timeout --signal=INT --kill-after=5 $limit "$PY" -m mmtlab.cli bench $DEV --steps $STEPS --warmup $WARM \
    --out "$OUT/$name.json" "$@" 2> >(grep -v "^ours vs" >&2) || echo "!! $name failed or timed out (rc $?)"
}

if [[ -z "${NO_COMPILE:-}" ]]; then  # GPU correctness first: tests/test_cuda.py (compiled bf16 step as one graph, ...)
  left=$(( DEADLINE - ($(date +%s) - START) - 15 ))
  echo "== tests/test_cuda.py (limit 100s)"
  timeout --signal=INT --kill-after=5 $(( left < 100 ? left : 100 )) "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py 2>&1 \
    | tail -n 15 || echo "!! CUDA tests failed or timed out"
fi
run eager_b$B                 60 --batch $B
run compile_visualbert_b$B   150 --batch $B --compile ours --compare visualbert   # ours compiled vs HF eager
run compile_ours_b$BIG       120 --batch $BIG --no-peers --compile --compare visualbert   # MFU target
run compile_lxmert_b$B       120 --batch $B --compile ours --compare lxmert
run eager_ours_b$BIG          45 --batch $BIG --no-peers
run eager_b${B}_no_last_rows  40 --batch $B --ablate last-rows --compare visualbert  # what the last-rows lever (host syncs) nets on GPU

echo "== summary ($(( $(date +%s) - START ))s in all)"
"$PY" - "$OUT" <<'PYEOF'
import json, pathlib, sys
rows = []
for path in sorted(pathlib.Path(sys.argv[1]).glob("*.json")):
    r = json.loads(path.read_text())
    print(f"{path.name}: {r['device_name']} ({r['device']}), torch {r['torch']}, transformers {r['transformers']}, "
          f"{r['precision']}, {len(r['comparisons'])} comparison(s)")
    mode = {"none": "eager", "all": "compiled", "ours": "ours compiled, HF eager"}[r["compile"]]
    mode += f" (ablated: {','.join(r['ablate'])})" if r["ablate"] else ""
    if "bf16_check" in r:
        c = r["bf16_check"]
        print(f"bf16 check ({path.name}): states rel err {c['states_rel_err']:.2e}, ITM logits rel err "
              f"{c['itm_logits_rel_err']:.2e} -> {'ok' if c['ok'] else 'MISMATCH'}")
    for row in r["comparisons"]:
        for who in ("ours", "theirs"):
            if who in row:
                e = row[who]
                mfu = f"{100 * e['mfu']:.1f}%" if e["mfu"] is not None else "n/a"
                ratio = f"{row['ratio_train']:.2f}x / {row['ratio_score']:.2f}x" if who == "ours" and "ratio_train" in row else ""
                rows.append((e["name"].split(" (")[0], mode, str(r["batch"]), f"{e['train_samples_per_s']:,.1f}",
                             f"{e['score_pairs_per_s']:,.1f}", mfu, ratio))
# the issue's GPU target: ours compiled / HF eager -- in one process (--compile ours) or across the eager and
# compiled (all) runs at the same batch
by_mode = {}
for path in pathlib.Path(sys.argv[1]).glob("*.json"):
    r = json.loads(path.read_text())
    for row in r["comparisons"] if not r["ablate"] else []:
        by_mode[(r["compile"], r["batch"], row["comparison"])] = row
for (mode, batch, comp), row in sorted(by_mode.items()):
    eager = by_mode.get(("none", batch, comp))
    if mode == "ours" and "ratio_train" in row:
        print(f"{comp}, batch {batch}: ours compiled / HF eager (one process) = train {row['ratio_train']:.2f}x, "
              f"score {row['ratio_score']:.2f}x")
    elif mode == "all" and eager and "theirs" in eager:
        print(f"{comp}, batch {batch}: ours compiled / HF eager (two runs) = train {row['ours']['train_samples_per_s'] / eager['theirs']['train_samples_per_s']:.2f}x, "
              f"score {row['ours']['score_pairs_per_s'] / eager['theirs']['score_pairs_per_s']:.2f}x")
head = ("contender", "mode", "batch", "train samples/s", "score pairs/s", "MFU", "ours/theirs train / score")
w = [max(len(x[i]) for x in rows + [head]) for i in range(len(head))]
for x in [head] + rows:
    print("  ".join(s.ljust(n) for s, n in zip(x, w)))
PYEOF
