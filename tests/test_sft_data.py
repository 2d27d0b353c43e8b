"""SFT training data from pruned shards: filters, the exact unpruned mix, max_tokens, BOS, the
errors for wrong input, and the rows TRL trains on (prompt masked, one EOS).

Also the shared pruned-row helpers of the other test_sft_* files.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from test_sft_skip_token import base_model

from stepprune.cot.steps import SKIP_TOKEN
from stepprune.schema import PRUNED, SchemaError, to_table
from stepprune.shards import read_table, write_table_atomic
from stepprune.stages.sft import SFTStageConfig, make_trainer, run, sft_config
from stepprune.train.sft_data import added_bos, build_dataset, render_completion
from stepprune.train.skip_token import add_skip_token, fit_embeddings

PROMPT = "<|im_start|>user\n{i} apples and 5 more?<|im_end|>\n<|im_start|>assistant\n"
STEPS = ["Tom has {i} apples.", "He buys 5 more.", "{i} + 5 = {s}.", "So the total is {s}."]


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


def skip_tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    add_skip_token(tok)
    return tok


def trained_lengths(tok, data) -> list[int]:
    """Tokens of prompt + completion + the EOS TRL appends (the tiny tokenizer adds no BOS)."""
    pairs = zip(data["prompt"], data["completion"], strict=True)
    return [len(tok(p + c)["input_ids"]) + 1 for p, c in pairs]


def test_filters_and_unpruned_mix(tiny_model_dir, tmp_path):
    rows = [pruned_row(i) for i in range(10)]
    rows += [pruned_row(10, correct=False), pruned_row(11, kappa=0.5)]
    rows += [pruned_row(12, strategy="random")]
    src = write_pruned(tmp_path / "p", rows)
    files = [src / "part-00000.parquet"]
    tok = skip_tokenizer(tiny_model_dir)
    cfg = SFTStageConfig(input=str(src), kappa=0.8, strategy="low", unpruned_fraction=0.3)
    data, report = build_dataset(files, cfg, tok)
    assert (report.rows_in, report.rows, report.dropped_incorrect) == (13, 10, 1)
    assert (report.dropped_kappa, report.dropped_strategy, report.unpruned) == (1, 1, 3)
    unpruned = [c for c in data["completion"] if SKIP_TOKEN not in c]
    assert len(unpruned) == 3 and all("He buys 5 more." in c for c in unpruned)
    assert report.kappa_strategy == {"kappa=0.8 strategy=low": 10}
    again, _ = build_dataset(files, cfg, tok)
    assert again["completion"] == data["completion"]  # seeded

    # max_tokens counts prompt + completion + EOS of the text actually trained on: the expected
    # count comes from the same settings without max_tokens.
    plain = SFTStageConfig(input=str(src), kappa=0.8, strategy="low")
    lengths = sorted(trained_lengths(tok, build_dataset(files, plain, tok)[0]))
    short = SFTStageConfig(input=str(src), kappa=0.8, strategy="low", max_tokens=lengths[4])
    data, report = build_dataset(files, short, tok)
    assert report.rows == sum(n <= lengths[4] for n in lengths) and report.dropped_long > 0
    assert max(trained_lengths(tok, data)) <= lengths[4] == report.max_sequence_tokens


def test_unpruned_mix_is_exact_under_max_tokens(tiny_model_dir, tmp_path):
    """round(f x N) rows train unpruned, N counted after max_tokens, all within max_tokens."""
    rows = [pruned_row(i) for i in range(11)]
    for r in rows[6:10]:  # unpruned, these four are too long; compressed, they fit
        r["original_thinking"] += "\n\n" + "Check the sum once more. " * 30
    rows[10]["answer_text"] += " Recheck." * 200  # too long either way: dropped
    rows[10]["completion"] = render_completion(
        rows[10]["prompt"], rows[10]["compressed_thinking"], rows[10]["answer_text"]
    )
    src = write_pruned(tmp_path / "p", rows)
    files = [src / "part-00000.parquet"]
    tok = skip_tokenizer(tiny_model_dir)
    full = SFTStageConfig(input=str(src), unpruned_fraction=1.0)
    unpruned_lengths = trained_lengths(tok, build_dataset(files, full, tok)[0])
    limit = max(unpruned_lengths[:6])
    assert min(unpruned_lengths[6:10]) > limit
    for seed in range(5):  # the old mix-then-filter lost the long rows it had picked
        cfg = SFTStageConfig(input=str(src), max_tokens=limit, unpruned_fraction=0.5, seed=seed)
        data, report = build_dataset(files, cfg, tok)
        assert (report.rows, report.dropped_long, report.unpruned) == (10, 1, 5)
        unpruned = [i for i, c in enumerate(data["completion"]) if SKIP_TOKEN not in c]
        assert len(unpruned) == 5 and set(unpruned) <= set(range(6))
        assert max(trained_lengths(tok, data)) <= limit
    too_many = SFTStageConfig(input=str(src), max_tokens=limit, unpruned_fraction=0.7)
    with pytest.raises(ValueError, match="asks for 7 of 10 rows.*only 6 fit max_tokens"):
        build_dataset(files, too_many, tok)


def test_clear_errors_for_wrong_shards_and_empty_data(tiny_model_dir, tmp_path):
    from stepprune.synthetic import synthetic_table

    def cfg(src, out, **kw):
        return SFTStageConfig(
            input=str(src), out=str(tmp_path / out), model=str(tiny_model_dir), **kw
        )

    gen = tmp_path / "gen"
    gen.mkdir()
    write_table_atomic(synthetic_table(4, steps=3, tokens_per_step=4), gen / "part-0.parquet")
    with pytest.raises(SchemaError, match=r"part-0\.parquet: is a 'generations' file"):
        run(cfg(gen, "o1"))
    plain = tmp_path / "plain"
    plain.mkdir()
    pq.write_table(pa.table({"prompt": ["x"]}), plain / "x.parquet")
    with pytest.raises(SchemaError, match="x.parquet: not a stepprune file"):
        run(cfg(plain, "o2"))
    wrong = write_pruned(tmp_path / "wrong", [pruned_row(0, correct=False), pruned_row(1)])
    with pytest.raises(ValueError, match="no training rows left after filtering.*1 incorrect"):
        run(cfg(wrong, "o3", kappa=0.5))
    with pytest.raises(FileNotFoundError, match="no pruned shards"):
        run(cfg(tmp_path / "plain" / "..", "o4"))
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 5))


def test_training_rows_mask_the_prompt_and_end_with_eos(tiny_model_dir, tmp_path):
    pruned_dir = write_pruned(tmp_path / "p", [pruned_row(i) for i in range(2)])
    tok, model = base_model(tiny_model_dir)
    token = add_skip_token(tok)
    fit_embeddings(model, token)
    cfg = SFTStageConfig(
        input=str(pruned_dir),
        out=str(tmp_path / "o"),
        model=str(tiny_model_dir),
        sft_args={"bf16": False, "report_to": "none"},
    )
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


def test_a_problem_quoting_skip_keeps_it_as_text(tiny_model_dir, tmp_path):
    """A problem that quotes "[SKIP]" is encoded as the base model read it (as text); only the
    completion's [SKIP]s are the special token."""
    from transformers import AutoTokenizer

    row = pruned_row(0)
    quoted = "What does [SKIP] mean? 0 apples and 5 more?"
    row["prompt"] = row["prompt"].replace("0 apples and 5 more?", quoted)
    src = write_pruned(tmp_path / "p", [row])
    tok, model = base_model(tiny_model_dir)
    token = add_skip_token(tok)
    fit_embeddings(model, token)
    assert token.token_id in tok(row["prompt"])["input_ids"]  # TRL's own tokenization of it
    cfg = SFTStageConfig(input=str(src), out=str(tmp_path / "o"), sft_args={"bf16": False})
    data, _ = build_dataset([src / "part-00000.parquet"], cfg, tok)
    trainer = make_trainer(cfg, sft_config(cfg)[0], model, tok, data, token.token_id)
    ids, labels = trainer.train_dataset[0]["input_ids"], trainer.train_dataset[0]["labels"]
    n_prompt = next(i for i, x in enumerate(labels) if x != -100)
    base = AutoTokenizer.from_pretrained(tiny_model_dir)  # the tokenizer before [SKIP] existed
    assert ids[:n_prompt] == base(row["prompt"])["input_ids"]
    assert token.token_id not in ids[:n_prompt]
    completion = tok(row["completion"], add_special_tokens=False)["input_ids"]
    assert ids[n_prompt:] == labels[n_prompt:] == completion + [tok.eos_token_id]
    assert ids.count(token.token_id) == row["completion"].count(SKIP_TOKEN) == 2


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


def test_bos_is_not_doubled(tiny_model_dir, tmp_path):
    class Tok:  # a tokenizer that prepends BOS itself, like the DeepSeek-R1 distills'
        bos_token, bos_token_id, eos_token, eos_token_id = "<s>", 1, "</s>", 2

        def __init__(self, adds):
            self.adds = adds

        def ids(self, text, add_special_tokens):
            return ([1] if self.adds and add_special_tokens else []) + [5] * len(text.split())

        def __call__(self, text, add_special_tokens=True):
            batch = text if isinstance(text, list) else [text]
            ids = [self.ids(t, add_special_tokens) for t in batch]
            return {"input_ids": ids if isinstance(text, list) else ids[0]}

    assert added_bos(Tok(adds=True)) == "<s>" and added_bos(Tok(adds=False)) == ""
    from transformers import AutoTokenizer

    assert added_bos(AutoTokenizer.from_pretrained(tiny_model_dir)) == ""
    rows = [pruned_row(0)]
    rows[0]["prompt"] = "<s>" + rows[0]["prompt"]
    src = write_pruned(tmp_path / "bos", rows)
    cfg = SFTStageConfig(input=str(src))
    data, _ = build_dataset([src / "part-00000.parquet"], cfg, Tok(adds=True))
    assert data["prompt"] == [pruned_row(0)["prompt"]]
    data, _ = build_dataset([src / "part-00000.parquet"], cfg, Tok(adds=False))
    assert data["prompt"] == ["<s>" + pruned_row(0)["prompt"]]
