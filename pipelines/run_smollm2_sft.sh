#!/usr/bin/env bash
# Issue #6's real check on a 2-core CPU, with the embedded SmolLM2-135M-Instruct:
#   1. generate CoTs on three MAWPS sets used as training data (addsub, singleeq, multiarith);
#   2. prune them at kappa = 0.8 (all of them: SmolLM2 is almost never right);
#   3. SFT with LoRA (pipelines/sft_smollm2_cpu.yaml), merged weights for serving;
#   4. generate on held-out MAWPS single-op problems with the base and the SFT'd model, same
#      sampling, and compare skip ratio, thinking tokens and accuracy (the summaries printed).
#   5. GRPO from the SFT'd model for a few steps (pipelines/grpo_smollm2_sft_cpu.yaml).
# Resumable: generate resumes; prune, sft and grpo overwrite. Needs: bash .ci/setup.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
R=${RUN:-runs/smollm2-sft}
export HF_HUB_OFFLINE=1
for s in mawps_addsub mawps_singleeq mawps_multiarith; do
  "$PY" -m stepprune.cli generate -r pipelines/generate_smollm2_cpu.yaml --problems "$s" \
    --limit "${TRAIN_PER_SET:-64}" --out "$R/train-generate"
done
"$PY" -m stepprune.cli prune -i "$R/train-generate" --out "$R/pruned" --kappa 0.8 --all --overwrite
/usr/bin/time -f "sft: %e s" "$PY" -m stepprune.cli sft -r pipelines/sft_smollm2_cpu.yaml \
  -i "$R/pruned" --out "$R/sft"
for model in base sft; do
  flag=(); [ "$model" = sft ] && flag=(--model "$R/sft/merged")
  "$PY" -m stepprune.cli generate -r pipelines/generate_smollm2_cpu.yaml --problems mawps_singleop \
    --limit "${HELDOUT:-48}" --out "$R/heldout-$model" "${flag[@]}"
done
# 5. GRPO from the SFT'd model (issue #7's real check): reward parts, skip ratio and length per step.
/usr/bin/time -f "grpo: %e s" "$PY" -m stepprune.cli grpo -r pipelines/grpo_smollm2_sft_cpu.yaml \
  --problems "$R/pruned" --model "$R/sft/merged" --out "$R/grpo"
