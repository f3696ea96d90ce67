#!/usr/bin/env bash
# The GPU benchmarks of docs/performance.md, in one script, with random-weight models of real sizes
# (no download, no tokenizer: the prompt is 64 token ids).  Writes one log per run to ${OUT:-.}.
#
#   1. the decode step against the memory-bandwidth limit at batch 1, 64 and 256, Qwen2.5-0.5B and
#      -7B shapes: the static engine with its variable-width step ("static") and with its compiled,
#      graph-captured static-shape step ("static_compiled", capture time in `capture_s`), the dynamic
#      engine, and transformers' own generate with its compiled static cache, side by side
#      (experiments/bench_decode.py --graphs compiled --hf-generate);
#   2. the power sampler (graphs "auto": compiled on CUDA, finish reads every 8 steps) against plain
#      generation and the published-code mirror at 64 and 256 chains (0.5B;
#      experiments/bench_throughput.py: sampler_vs_generate, speedup_vs_reference);
#   3. the 7B sampler at 64 chains and at the chains a real MATH500 run would batch ("auto": the row
#      budget that half the free memory holds at 64 + 3072 tokens per row, 2 rows per chain), whose
#      measured rates give the MATH500 projection at the paper's settings (T = 3072, B = 192,
#      N_MCMC = 10; `math500_projection` in its JSON line).
#
# Aimed at 8 minutes of one H200; compilation and capture per bucket are not yet measured there,
# so the first run's log (its timestamps and capture_s) sizes the next.
#
#   bash experiments/bench_gpu.sh
set -uo pipefail
out=${OUT:-.}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
prompt=$(python3 -c "print(' '.join(str(100 + 37 * i % 5000) for i in range(64)))")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
date -u +%Y-%m-%dT%H:%MZ
log() {  # name, then a command: runs it, keeps its log
  local name=$1; shift
  echo "== $name: $*"
  PYTHONUNBUFFERED=1 "$@" 2>&1 | grep -v -i "warn\|loading weights" | tee "$out/bench_$name.log"
}
for model in qwen2-0.5b qwen2-7b; do
  log "decode_$model" python3 experiments/bench_decode.py --model "random:$model" --device cuda \
    --batches 1 64 256 --rounds 2 --steps 32 --graphs compiled --hf-generate
done
sampler=(--model random:qwen2-0.5b --device cuda --prompt "$prompt" --max-new-tokens 256 --block-size 64 --mcmc-steps 2
         --sampler-repeats 2 --reference-samples 2 --no-compare --no-compare-early-reject)
log "sampler_qwen2-0.5b_c64" python3 experiments/bench_throughput.py "${sampler[@]}" --chains 64
log "sampler_qwen2-0.5b_c256" python3 experiments/bench_throughput.py "${sampler[@]}" --chains 256 --reference-samples 1
log "sampler_qwen2-7b_c64" python3 experiments/bench_throughput.py --model random:qwen2-7b --device cuda --prompt "$prompt" \
  --max-new-tokens 256 --block-size 64 --mcmc-steps 2 --sampler-repeats 1 --reference-samples 1 --no-compare \
  --no-compare-early-reject --chains 64
log "sampler_qwen2-7b_auto" python3 experiments/bench_throughput.py --model random:qwen2-7b --device cuda --prompt "$prompt" \
  --max-new-tokens 256 --block-size 64 --mcmc-steps 2 --sampler-repeats 1 --reference-samples 1 --no-compare \
  --no-compare-early-reject --chains auto
date -u +%Y-%m-%dT%H:%MZ
