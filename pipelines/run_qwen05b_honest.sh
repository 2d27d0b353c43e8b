#!/usr/bin/env bash
# Issue #15's real run on a 2-core CPU: is pruning by step entropy better than chance at equal
# token cost, on Qwen2.5-Coder-0.5B-Instruct? Its greedy test CoTs come from the bench run
# (pipelines/run_qwen05b_bench.sh, the base model's generations: SVAMP, MAWPS single-op, GSM8K);
# `score` makes their entropies exact, then `eval` answers from every pruned variant.
# Resumable: rerun after a kill. Needs: bash .ci/setup && bash .ci/setup-vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-6} VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
export VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python} VPY=${VPY:-.venv-vllm/bin/python}
B=${B:-runs/qwen-bench/bench/generations/base}  # the bench run's base generations
for set in svamp mawps_singleop gsm8k; do
  /usr/bin/time -f "score $set: %e s" "$PY" -m stepprune.cli score -i "$B/$set" \
    --out runs/qwen-honest/generate --model qwen2.5-coder-0.5b-instruct --dtype float32 \
    --set token_budget=1
done
/usr/bin/time -f "eval: %e s" "$VPY" -m stepprune.cli eval -r pipelines/eval_qwen05b_honest_vllm_cpu.yaml
