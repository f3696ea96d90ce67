#!/usr/bin/env bash
# The GPU benchmarks of docs/performance.md, in one script, with random-weight models of real sizes
# (no download, no tokenizer: the prompt is 64 token ids).  Writes one log per run to ${OUT:-.}.
#
#   1. the plain decode step against the memory-bandwidth limit, static and dynamic engines side
#      by side: Qwen2.5-0.5B and -7B shapes at batch 1, 8, 64 and 128 (experiments/bench_decode.py);
#   2. the power sampler against plain generation and against the published-code mirror at 8, 64
#      and 128 chains (0.5B; experiments/bench_throughput.py; at 64 chains also on the other engine);
#   3. the 7B sampler at 64 chains, whose measured rate gives the MATH500 projection at the paper's
#      settings (`math500_projection` in its JSON line).
#
# Sized for about 10 minutes of one H200 from the step times measured there before static slots
# (docs/performance.md); not yet run with this engine, so watch the first run's time.
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
    --batches 1 8 64 128 --rounds 2 --steps 32
done
sampler=(--model random:qwen2-0.5b --device cuda --prompt "$prompt" --max-new-tokens 256 --block-size 64 --mcmc-steps 2
         --sampler-repeats 2 --reference-samples 2 --no-compare)
log "sampler_qwen2-0.5b_c8" python3 experiments/bench_throughput.py "${sampler[@]}" --chains 8
log "sampler_qwen2-0.5b_c64" python3 experiments/bench_throughput.py "${sampler[@]}" --chains 64 --compare-engine
log "sampler_qwen2-0.5b_c128" python3 experiments/bench_throughput.py "${sampler[@]}" --chains 128
log "sampler_qwen2-7b_c64" python3 experiments/bench_throughput.py --model random:qwen2-7b --device cuda --prompt "$prompt" \
  --max-new-tokens 256 --block-size 64 --mcmc-steps 2 --sampler-repeats 1 --reference-samples 1 --no-compare --chains 64
date -u +%Y-%m-%dT%H:%MZ
