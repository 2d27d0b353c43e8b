"""bench on the tiny model: every table value against an independent recount from the shards,
L-Acc, Pass@k and the CIs against hand values and an independent notebook, refusals, reuse."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path

import matplotlib
import numpy as np
import polars as pl
import pytest
from conftest import biased_copy

from stepprune.evaluation.bench_report import ks
from stepprune.evaluation.efficiency import EFFICIENCY_COLUMNS
from stepprune.evaluation.metrics import bootstrap_ci
from stepprune.stages.bench import BenchConfig, run

REPO = Path(__file__).resolve().parents[1]


def problem_file(path: Path, n: int, offset: int = 0) -> Path:
    rows = [{"problem": f"{i} apples?", "answer": str(i + offset)} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def bench_run(tiny_model_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    short = biased_copy(tiny_model_dir, tmp / "short")  # its EOS row ends samples early
    skipper = biased_copy(tiny_model_dir, tmp / "skipper", add_skip=True)  # writes [SKIP]
    cfg = BenchConfig(
        models=[f"base={tiny_model_dir}", f"short={short}", f"skipper={skipper}"],
        benchmarks=[  # not in name order: tables keep the given order
            str(problem_file(tmp / "beta.jsonl", 3)),
            str(problem_file(tmp / "alpha.jsonl", 5)),
        ],
        out=str(tmp / "out"),
        n_samples=3,
        temperature=1.0,
        top_p=1.0,
        max_new_tokens=16,
        dtype="float32",
        batch_size=4,
        bootstrap=200,
        prompt_template="{problem}",
    )
    summary = run(cfg)
    return cfg, summary


def shards(cfg, model, bench) -> pl.DataFrame:
    return pl.read_parquet(f"{cfg.out}/generations/{model}/{bench}/*.parquet")


def first_stating(steps, gold: str, n_thinking: int) -> int:
    """The end token of the first step writing the (integer) gold as a whole number."""
    for s in steps:
        if re.search(rf"(?<![\d.]){gold}(?![\d]|\.\d)", s["text"]):
            return s["token_end"]
    return n_thinking


def test_every_value_equals_an_independent_recount(bench_run):
    cfg, summary = bench_run
    table = pl.read_csv(Path(cfg.out) / "bench.csv")
    assert table.height == 2 * 3 + 3  # (benchmark, model) pairs, then one average per model
    for r in table.filter(pl.col("benchmark") != "average").iter_rows(named=True):
        df = shards(cfg, r["model"], r["benchmark"])
        per = df.group_by("problem_id").agg(c=pl.col("correct").sum(), n=pl.len())
        assert (r["problems"], r["samples"]) == (per.height, 3)
        assert r["acc"] == pytest.approx(float((per["c"] / 3).mean()))
        assert r["len"] == pytest.approx(df["n_tokens"].mean())
        assert r["thinking"] == pytest.approx(df["n_thinking_tokens"].mean())
        assert r["steps"] == pytest.approx(df["n_steps"].mean())
        skips = [sum(s["is_skip"] for s in steps) for steps in df["steps"].to_list()]
        assert r["skips"] == pytest.approx(float(np.mean(skips)))
        ratios = [k / len(st) for k, st in zip(skips, df["steps"].to_list(), strict=True) if st]
        assert r["skip_ratio"] == pytest.approx(float(np.mean(ratios)) if ratios else 0.0)
        if r["model"] == "skipper":
            assert r["skips"] > 0 and 0 < r["skip_ratio"] <= 1  # not 0 against 0
        assert r["reasoning_tokens"] == pytest.approx(df["n_thinking_tokens"].mean())
        firsts = [
            first_stating(s, g, n)
            for s, g, n, ok in df.select(
                "steps", "gold_answer", "n_thinking_tokens", "correct"
            ).rows()
            if ok
        ]
        hand = float(np.mean(firsts)) if firsts else None
        assert (
            (r["first_correct_tokens"] == pytest.approx(hand))
            if firsts
            else (r["first_correct_tokens"] is None or math.isnan(r["first_correct_tokens"]))
        )
        for k in (1, 2, 3):  # unbiased pass@k by hand: 1 - C(n-c, k) / C(n, k)
            hand = np.mean([1 - math.comb(3 - c, k) / math.comb(3, k) for c in per["c"]])
            assert r[f"pass@{k}"] == pytest.approx(hand)
        means = per.sort("problem_id").select(m=pl.col("c") / pl.col("n"))["m"].to_numpy()
        low, high = bootstrap_ci(means, n_boot=200)  # over problems, each its own pass@1
        assert (r["acc_low"], r["acc_high"]) == pytest.approx((low, high))
        base = shards(cfg, "base", r["benchmark"])["n_tokens"].mean()
        ratio = min(r["len"] / base, 1.0)
        assert r["reduction_pct"] == pytest.approx(100 * (1 - r["len"] / base))
        assert r["l_acc"] == pytest.approx(r["acc"] * math.sqrt(1 - ratio))
        timing = json.loads(
            (
                Path(cfg.out) / "generations" / r["model"] / r["benchmark"] / "timing.json"
            ).read_text()
        )
        assert r["tok_s"] == pytest.approx(timing["tokens"] / timing["seconds"])
        per_problem = timing["seconds"] / (timing["rows"] / cfg.n_samples)
        assert r["s_per_problem"] == pytest.approx(per_problem)
        assert timing["rows"] == df.height and timing["tokens"] == df["n_tokens"].sum()
    for model in ("base", "short", "skipper"):
        avg = table.filter((pl.col("benchmark") == "average") & (pl.col("model") == model))
        parts = table.filter((pl.col("benchmark") != "average") & (pl.col("model") == model))
        for col in ("acc", "len", "l_acc", "pass@3"):
            assert avg[col][0] == pytest.approx(parts[col].mean())
    short_len = table.filter((pl.col("model") == "short") & (pl.col("benchmark") == "average"))
    assert short_len["reduction_pct"][0] > 0  # the EOS-biased copy really is shorter


def test_paired_differences_and_their_cis(bench_run):
    cfg, _ = bench_run
    paired = pl.read_csv(Path(cfg.out) / "paired.csv")
    assert paired["model"].unique(maintain_order=True).to_list() == ["short", "skipper"]
    # as given, pooled last
    assert paired["benchmark"].to_list() == ["beta", "alpha", "all"] * 2
    diffs = {}
    for bench in ("alpha", "beta"):
        a = shards(cfg, "short", bench).group_by("problem_id").agg(pl.col("n_tokens").mean())
        b = shards(cfg, "base", bench).group_by("problem_id").agg(pl.col("n_tokens").mean())
        d = a.join(b, on="problem_id").with_columns(d=pl.col("n_tokens") - pl.col("n_tokens_right"))
        d = d.sort("problem_id")
        diffs[bench] = d["d"].to_numpy()
        row = paired.filter((pl.col("benchmark") == bench) & (pl.col("model") == "short")).row(
            0, named=True
        )
        assert row["d_len"] == pytest.approx(d["d"].mean()) and row["problems"] == d.height
        low, high = bootstrap_ci(diffs[bench], n_boot=200)
        assert (row["d_len_low"], row["d_len_high"]) == pytest.approx((low, high))
    pooled = paired.filter((pl.col("benchmark") == "all") & (pl.col("model") == "short"))
    pooled = pooled.row(0, named=True)
    assert pooled["problems"] == 8
    assert pooled["d_len"] == pytest.approx(np.concatenate(list(diffs.values())).mean())


def hand_rows(samples: dict[str, list[int]], model: str = "base") -> pl.DataFrame:
    """bench's per-sample rows for ``samples`` (problem -> correct flags), one benchmark."""
    rows = [(p, bool(c)) for p, flags in samples.items() for c in flags]
    return pl.DataFrame(
        {
            "problem_id": [p for p, _ in rows],
            "correct": [c for _, c in rows],
            "n_tokens": [10] * len(rows),
            "n_thinking_tokens": [5] * len(rows),
            "n_steps": [1] * len(rows),
            "n_skip": [0] * len(rows),
            "model": [model] * len(rows),
            "benchmark": ["b"] * len(rows),
            **{c: [5.0] * len(rows) for c in EFFICIENCY_COLUMNS},
        }
    )


def hand_cfg(tmp_path, **kw):
    from types import SimpleNamespace

    settings = dict(ci_level=0.95, bootstrap=4000, seed=0, base_name="base", n_samples=1)
    return SimpleNamespace(out=str(tmp_path), **{**settings, **kw})


def test_acc_ci_resamples_the_mean_of_per_problem_means(tmp_path):
    from stepprune.evaluation.bench_report import main_table

    # a: 1 of 1 correct, b: 0 of 3. acc = (1 + 0) / 2 = 0.5; the pooled ratio would be 1/4.
    # Drawing two problems with replacement gives {a,a} = 1, {a,b} = 0.5 (probability 1/2),
    # {b,b} = 0; the 40 % and 60 % quantiles of that lie in the 0.5 block: the 20 % interval
    # is exactly [0.5, 0.5] (over pooled samples {a,b} would be 0.25).
    rows = hand_rows({"a": [1], "b": [0, 0, 0]})
    r = main_table(rows, hand_cfg(tmp_path, ci_level=0.2)).row(0, named=True)
    assert (r["acc"], r["acc_low"], r["acc_high"]) == (0.5, 0.5, 0.5)

    # Unequal counts again, against an independent bootstrap over problems (same seed).
    samples = {
        "p1": [1],
        "p2": [0, 0, 0, 0],
        "p3": [1, 1, 0],
        "p4": [0, 1],
        "p5": [0, 0, 0, 0, 0, 1],
        "p6": [1, 1, 1, 1],
    }
    r = main_table(hand_rows(samples), hand_cfg(tmp_path)).row(0, named=True)
    means = np.array([np.mean(samples[p]) for p in sorted(samples)])
    pooled = sum(map(sum, samples.values())) / sum(map(len, samples.values()))
    assert r["acc"] == pytest.approx(means.mean()) and abs(means.mean() - pooled) > 0.05
    pick = np.random.default_rng(0).integers(0, len(means), size=(4000, len(means)))
    low, high = np.quantile(means[pick].mean(axis=1), [0.025, 0.975])
    assert (r["acc_low"], r["acc_high"]) == pytest.approx((low, high))
    assert r["acc_low"] <= r["acc"] <= r["acc_high"]


def test_paired_cis_resample_the_paired_mean_shown(tmp_path):
    from stepprune.evaluation.bench_report import paired_table

    base = {"a": [1], "b": [0, 0, 0], "c": [1, 0], "d": [1, 1, 1, 0]}
    other = {"a": [0, 1, 1], "b": [1], "c": [1, 1, 0, 0, 0], "d": [0]}
    rows = pl.concat([hand_rows(base), hand_rows(other, "m")])
    cfg = hand_cfg(tmp_path, entry_names=lambda: ["base", "m"], benchmarks=["b"])
    r = paired_table(rows, cfg).filter(pl.col("benchmark") == "b").row(0, named=True)
    diffs = np.array([np.mean(other[p]) - np.mean(base[p]) for p in sorted(base)])
    assert r["d_acc"] == pytest.approx(diffs.mean())
    pick = np.random.default_rng(0).integers(0, len(diffs), size=(4000, len(diffs)))
    low, high = np.quantile(diffs[pick].mean(axis=1), [0.025, 0.975])
    assert (r["d_acc_low"], r["d_acc_high"]) == pytest.approx((low, high))


def test_hand_values_for_ks_and_constant_cis():
    assert ks(1) == [1] and ks(3) == [1, 2, 3] and ks(16) == [1, 2, 4, 8, 16]
    assert bootstrap_ci([1.0, 1.0, 1.0], n_boot=50) == (1.0, 1.0)  # no spread, no interval


def test_outputs_notebook_and_reuse(bench_run):
    cfg, summary = bench_run
    out = Path(cfg.out)
    for png in ("lengths.png", "frontier.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and (
            out / png
        ).stat().st_size > 5000
    assert "| alpha | base |" in (out / "bench.md").read_text()
    matplotlib.use("Agg")
    nb = json.loads((REPO / "notebooks" / "bench.ipynb").read_text())
    scope: dict = {}
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            src = "".join(cell["source"]).replace("../runs/qwen-bench/bench", str(out))
            exec(compile(src, "notebook", "exec"), scope)
    mine = scope["table"].sort("benchmark", "model")
    csv = (
        pl.read_csv(out / "bench.csv")
        .filter(pl.col("benchmark") != "average")
        .sort("benchmark", "model")
    )
    for a, b in (
        ("acc", "acc"),
        ("lo", "acc_low"),
        ("hi", "acc_high"),
        ("l_acc", "l_acc"),
        ("pass@3", "pass@3"),
    ):
        np.testing.assert_allclose(mine[a].to_numpy(), csv[b].to_numpy(), rtol=1e-6, atol=1e-9)
    before = {p: p.stat().st_mtime_ns for p in (out / "generations").rglob("*.parquet")}
    run(cfg)  # a rerun reuses every finished (model, benchmark)
    assert {p: p.stat().st_mtime_ns for p in (out / "generations").rglob("*.parquet")} == before


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-m", "a=M", "-m", "a=M", "-b", "gsm8k"], "model name 'a' is given twice"),
        (["-m", "a=M", "-b", "nosuchset"], "'nosuchset' is neither a built-in set"),
        (
            ["-m", "a=BROKEN", "-b", "mawps_singleop"],
            "model a=BROKEN: its tokenizer cannot be loaded",
        ),
        (["-m", "a=M", "-b", "mawps_singleop", "--base", "b"], "base 'b' is not one of the models"),
        (["-m", "a=M", "-m", "b=NOWEIGHTS", "-b", "mawps_singleop"], "b=NOWEIGHTS: no weights"),
        (["-b", "mawps_singleop"], "bench needs models: --model base="),
        (["-m", "..=M", "-b", "mawps_singleop"], "model name '..': letters, digits"),
        (["-m", "a=M", "-b", "mawps_singleop", "--baseline", "x=budget:0"], "SPEC is budget:N"),
        (
            ["-m", "a=M", "-b", "mawps_singleop", "--baseline", "x=budget:match=z"],
            "budget:match=z names no model",
        ),
        (["-m", "a=M", "-b", "mawps_singleop", "--baseline", "a=nothink"], "also a model name"),
    ],
)
def test_bad_input_is_one_line_before_any_generation(tiny_model_dir, tmp_path, args, message):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "tokenizer_config.json"):
        (broken / name).write_text((tiny_model_dir / name).read_text())
    (broken / "tokenizer.json").write_text("{not json")
    bare = tmp_path / "bare"  # a loadable tokenizer, but no weights
    bare.mkdir()
    for f in tiny_model_dir.iterdir():
        if not f.name.endswith(".safetensors"):
            (bare / f.name).write_bytes(f.read_bytes())
    subs = {"=M": f"={tiny_model_dir}", "BROKEN": str(broken), "NOWEIGHTS": str(bare)}
    for old, new in subs.items():
        args = [a.replace(old, new) for a in args]
        message = message.replace(old, new)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "stepprune.cli", "bench", *args, "--out", str(out), "--limit", "2"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-1500:]
    assert not (out / "generations").exists()


def test_model_names_that_are_paths_are_refused_at_config_time():
    # A name is the directory out/generations/<name>: '..' would write beside generations/.
    for name in ("..", ".", ".hidden", "a/b", "../up", "a b"):
        with pytest.raises(ValueError, match=rf"model name '{re.escape(name)}': letters"):
            BenchConfig(models=[f"{name}=some/model"])
    named = BenchConfig(models=["base=m1", "sft-k0.8=m2", "v1.2_x=m3"]).named_models()
    assert named == {"base": "m1", "sft-k0.8": "m2", "v1.2_x": "m3"}


def test_rows_beyond_this_runs_limit_and_samples_stay_out_of_the_tables(bench_run, tmp_path):
    import dataclasses
    import shutil

    from stepprune.evaluation.bench_report import write_report

    cfg, _ = bench_run
    out = tmp_path / "out"
    shutil.copytree(cfg.out, out)
    small = dataclasses.replace(cfg, out=str(out), limit=2, n_samples=2)
    table = pl.DataFrame(write_report(small)["table"])
    for r in table.filter(pl.col("benchmark") != "average").iter_rows(named=True):
        df = shards(cfg, r["model"], r["benchmark"])  # the full rows: 3 samples, every problem
        ids = sorted(df["problem_id"].unique().to_list(), key=lambda p: int(p.split("-")[-1]))
        kept = df.filter(pl.col("problem_id").is_in(ids[:2]) & (pl.col("sample_index") < 2))
        assert (r["problems"], r["samples"]) == (2, 2)
        assert r["len"] == pytest.approx(kept["n_tokens"].mean())
        per = kept.group_by("problem_id").agg(pl.col("correct").mean())
        assert r["acc"] == pytest.approx(per["correct"].mean())
