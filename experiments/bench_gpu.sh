#!/usr/bin/env bash
# The throughput benchmark on a GPU with random-weight models of real sizes (no download, no
# tokenizer: the prompt is 64 token ids).  About 10 minutes on one H200 (each run also times the other batching and 3 reference samples).  Writes logs to ${OUT:-.}.
#
#   bash experiments/bench_gpu.sh
set -uo pipefail
out=${OUT:-.}
export PYTHONPATH="$(cd "$(dirname "$0")/.." && pwd)${PYTHONPATH:+:$PYTHONPATH}"
prompt=$(python3 -c "print(' '.join(str(100 + 37 * i % 5000) for i in range(64)))")
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)"
run() {  # name, then bench arguments
  local name=$1; shift
  echo "== $name: $*"
  PYTHONUNBUFFERED=1 python3 experiments/bench_throughput.py --device cuda --prompt "$prompt" "$@" 2>&1 \
    | grep -v -i "warn\|loading weights" | tee "$out/bench_$name.log"
}
run qwen2-0.5b_c8 --model random:qwen2-0.5b --chains 8 --max-new-tokens 256 --block-size 64 --mcmc-steps 2
run qwen2-0.5b_c32 --model random:qwen2-0.5b --chains 32 --max-new-tokens 256 --block-size 64 --mcmc-steps 2
run qwen2-7b_c8 --model random:qwen2-7b --chains 8 --max-new-tokens 256 --block-size 64 --mcmc-steps 2
