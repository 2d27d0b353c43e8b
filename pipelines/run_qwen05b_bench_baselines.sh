#!/usr/bin/env bash
# Training-free baselines beside the trained models (issue #26): the EG run's bench
# (pipelines/run_qwen05b_eg_vllm.sh: base, EG compress, EG compress+explore on the first 100
# test problems of SVAMP, MAWPS single-op and GSM8K) again, with budget forcing at 64, 128 and
# 192 tokens and at each trained model's own mean thinking length, NoThinking, Chain of Draft
# and "be concise". The models' rows are reused; only the baselines generate.
# Needs: bash .ci/setup && bash .ci/setup-vllm, and the EG run's outputs in $R.
set -euo pipefail
cd "$(dirname "$0")/.."
source pipelines/vllm_cpu_env.sh
R=${R:-runs/qwen-eg-vllm}
M=qwen2.5-coder-0.5b-instruct
/usr/bin/time -f "bench with baselines: %e s" "$VPY" -m stepprune.cli bench \
  -r pipelines/bench_qwen05b_cpu.yaml --out "$R/bench" --limit 100 --model "base=$M" \
  --model "compress=$R/eg-compress/merged" --model "eg=$R/eg-explore/merged" \
  --baseline b64=budget:64 --baseline b128=budget:128 --baseline b192=budget:192 \
  --baseline match-compress=budget:match=compress --baseline match-eg=budget:match=eg \
  --baseline nothink=nothink --baseline cod=prompt:cod --baseline concise=prompt:concise
