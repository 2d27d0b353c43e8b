#!/usr/bin/env bash
# Training-free baselines beside the trained models (issue #26): the EG run's bench
# (pipelines/run_qwen05b_eg_vllm.sh: base, EG compress, EG compress+explore on the first 100
# test problems of SVAMP, MAWPS single-op and GSM8K) again, with budget forcing at 64, 128 and
# 192 tokens and at each trained model's own mean thinking length, NoThinking, Chain of Draft
# and "be concise". The models' rows are reused; only the baselines generate.
# Needs: bash .ci/setup && bash .ci/setup-vllm, and the EG run's outputs in $R.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-2} VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
export VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
VPY=${VPY:-.venv-vllm/bin/python}
R=${R:-runs/qwen-eg-vllm}
M=qwen2.5-coder-0.5b-instruct
/usr/bin/time -f "bench with baselines: %e s" "$VPY" -m stepprune.cli bench \
  -r pipelines/bench_qwen05b_cpu.yaml --out "$R/bench" --limit 100 --model "base=$M" \
  --model "compress=$R/eg-compress/merged" --model "eg=$R/eg-explore/merged" \
  --baseline b64=budget:64 --baseline b128=budget:128 --baseline b192=budget:192 \
  --baseline match-compress=budget:match=compress --baseline match-eg=budget:match=eg \
  --baseline nothink=nothink --baseline cod=prompt:cod --baseline concise=prompt:concise
