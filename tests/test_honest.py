"""Honest step selection: matched-budget controls, answer restatement, step classes, the
authors' scores, answer-first, checked against independent counts and hand values."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from stepprune.data.grading import states_value
from stepprune.pruning.facts import is_arithmetic
from stepprune.pruning.select import PruneSpec, prune_frame
from stepprune.synthetic import make_row


def frame(rows: list[dict]) -> pl.DataFrame:
    from stepprune.schema import GENERATIONS, to_table

    return pl.from_arrow(to_table(rows, GENERATIONS)).with_row_index("_row").with_row_index("_r")


def pruned_tokens(df: pl.DataFrame, spec: PruneSpec) -> list[int]:
    out = prune_frame(df, spec, None, "test")
    return (out["n_thinking_tokens"] - out["kept_thinking_tokens"]).to_list()


def random_rows(n: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        k = int(rng.integers(1, 9))
        ents = [list(np.round(rng.random(int(rng.integers(1, 12))), 3)) for _ in range(k)]
        rows.append(make_row(f"p{i}", [f"step {j}" for j in range(k)], ents))
    return rows


@pytest.mark.parametrize("kappa", [0.2, 0.5, 0.8, 1.0])
def test_matched_controls_remove_low_tokens_within_one_step(kappa):
    rows = random_rows(40, seed=int(kappa * 10))
    df = frame(rows)
    low = pruned_tokens(df, PruneSpec(kappa, "low"))
    for row, target, got_high, got_random in zip(
        rows,
        low,
        pruned_tokens(df, PruneSpec(kappa, "high-matched")),
        pruned_tokens(df, PruneSpec(kappa, "random-matched", seed=3)),
        strict=True,
    ):
        sizes = [s["n_tokens"] for s in row["steps"]]
        # independent count of low: the floor(kappa N) lowest entropy sums, earlier step on ties
        order = sorted(range(len(sizes)), key=lambda j: (row["steps"][j]["entropy_sum"], j))
        assert target == sum(sizes[j] for j in order[: math.floor(kappa * len(sizes) + 1e-9)])
        # high-matched: the prefix of the descending order whose tokens come closest, fewer on ties
        high = sorted(range(len(sizes)), key=lambda j: (-row["steps"][j]["entropy_sum"], j))
        prefix = np.concatenate([[0], np.cumsum([sizes[j] for j in high])])
        best = int(np.argmin(np.abs(prefix - target)))
        assert got_high == prefix[best]
        for got in (got_high, got_random):
            assert abs(got - target) <= max(sizes)  # within one step of low's budget


def test_random_matched_differs_by_seed_and_is_reproducible():
    df = frame(random_rows(30, seed=9))
    spec = PruneSpec(0.5, "random-matched", seed=1)
    a, b = prune_frame(df, spec, None, "t"), prune_frame(df, spec, None, "t")
    assert a["skip_mask"].to_list() == b["skip_mask"].to_list()
    other = prune_frame(df, PruneSpec(0.5, "random-matched", seed=2), None, "t")
    assert a["skip_mask"].to_list() != other["skip_mask"].to_list()


@pytest.mark.parametrize(
    ("text", "answer", "stated"),
    [
        ("so the total is \\boxed{8}", "8", True),
        ("Then 3 + 5 = 8 apples.", "8", True),
        ("Half of it: 0.5 of the cake", "1/2", True),
        ("She ate 1/2 of it", "0.5", True),
        ("\\frac{1}{2} of the cake", "0.5", True),
        ("There are 18 apples and 80 pears", "8", False),
        ("Let us add the numbers.", "8", False),
        ("The answer is Mrs. Hilt.", "Mrs. Hilt", True),
        ("12,000 people", "12000", True),
        ("anything", None, False),
    ],
)
def test_restatement_hand_cases(text, answer, stated):
    assert states_value(text, answer) is stated


def test_kept_thinking_restatement_and_answer_first():
    steps = ["Read the problem.", "3 + 5 = 8.", "Check it once more.", "So 8 it is."]
    ents = [[0.9, 0.9], [0.1], [0.5, 0.5, 0.5], [0.2]]
    df = frame([make_row("p", steps, ents, answer="\\boxed{8}") | {"extracted_answer": "8"}])
    low = prune_frame(df, PruneSpec(0.5, "low"), None, "t", facts=True).row(0, named=True)
    # low prunes the two lowest sums: "3 + 5 = 8." (0.1) and "So 8 it is." (0.2)
    assert low["skip_mask"] == [False, True, False, True]
    assert low["kept_states_answer"] is False and low["pruned_answer_steps"] == 2
    assert low["pruned_arithmetic_steps"] == 1 and low["n_pruned"] == 2
    assert low["pruned_arithmetic_entropy"] == pytest.approx(0.1)
    assert low["pruned_prose_entropy"] == pytest.approx(0.2)
    high = prune_frame(df, PruneSpec(0.5, "high"), None, "t", facts=True).row(0, named=True)
    assert high["skip_mask"] == [True, False, True, False] and high["kept_states_answer"] is True
    first = prune_frame(df, PruneSpec(0.25, "answer-first"), None, "t", facts=True)
    assert first["skip_mask"][0].to_list() == [False, True, False, False]  # lower sum first


@pytest.mark.parametrize(
    ("text", "arithmetic"),
    [
        ("3 + 5 = 8.", True),
        ("x = 12", True),
        ("12 / 4 gives 3", True),
        ("2 x 3 is 6", True),
        ("so she has 8 apples", False),
        ("First, read the problem.", False),
        ("In 2020 there were 5 of them", False),
    ],
)
def test_step_classes_hand_cases(text, arithmetic):
    assert is_arithmetic(text) is arithmetic


def test_sampled_and_surprisal_scores_by_hand():
    from stepprune.pruning.scores import step_scores

    row = make_row("p", ["a b", "c", "d e f"], [[0.3, 0.3], [0.9], [0.1, 0.1, 0.1]])
    row["token_logprobs"] = [-0.1, -2.0, -0.5, -1.0, -0.01, -3.0, -0.2, -0.2, -0.2]
    df = frame([row])
    steps = df.select("_r", "steps").explode("steps").unnest("steps")
    sampled = step_scores(df, steps, "sampled").to_list()
    surprisal = step_scores(df, steps, "surprisal").to_list()

    def term(lp):
        return -math.exp(lp) * lp

    assert sampled == pytest.approx(
        [(term(-0.1) + term(-2.0)) / 2, term(-0.5), (term(-1.0) + term(-0.01) + term(-3.0)) / 3]
    )
    assert surprisal == pytest.approx([2.1, 0.5, 4.01])
    # the score changes the order: by surprisal step 1 (0.5) goes first, by sum step 2 (0.3)
    by_sum = prune_frame(df, PruneSpec(0.34, "low", score="sum"), None, "t")["skip_mask"][0]
    by_surprisal = prune_frame(df, PruneSpec(0.34, "low", score="surprisal"), None, "t")
    assert by_sum.to_list() == [False, False, True]
    assert by_surprisal["skip_mask"][0].to_list() == [False, True, False]


@pytest.fixture(scope="module")
def honest_eval(tiny_model_dir, eval_cots, tmp_path_factory):
    from stepprune.stages.eval import EvalConfig, run

    tmp = tmp_path_factory.mktemp("honest")
    gen = eval_cots
    cfg = EvalConfig(
        input=str(gen),
        out=str(tmp / "eval"),
        model=str(tiny_model_dir),
        kappas=[0.0, 0.5, 1.0],
        strategies=["low", "random-matched", "high-matched", "answer-first"],
        random_seeds=2,
        answer_tokens=6,
        dtype="float32",
        bootstrap=100,
    )
    return cfg, run(cfg)


def test_eval_honest_tables_equal_a_recount_from_the_results(honest_eval):
    from stepprune.schema import EVAL_RESULTS
    from stepprune.shards import read_table

    cfg, summary = honest_eval
    res = pl.from_arrow(read_table(f"{cfg.out}/results", EVAL_RESULTS))
    assert sorted(res.filter(pl.col("strategy") == "random-matched")["seed"].unique()) == [0, 1]
    removed = res.with_columns(
        r=pl.col("original_thinking_tokens") - pl.col("kept_thinking_tokens")
    )
    matched = pl.read_csv(f"{cfg.out}/matched.csv")
    key = ["problem_id", "sample_index", "kappa"]
    low = removed.filter(pl.col("strategy") == "low").select(*key, low="r")
    for m in matched.iter_rows(named=True):
        g = removed.filter((pl.col("strategy") == m["strategy"]) & (pl.col("kappa") == m["kappa"]))
        gap = g.join(low, on=key).select(d=pl.col("r") - pl.col("low"))["d"]
        assert m["n"] == gap.len() and m["gap_mean"] == pytest.approx(gap.mean())
        assert m["gap_abs_max"] == gap.abs().max()
    restate = pl.read_csv(f"{cfg.out}/restatement.csv")
    for r in restate.iter_rows(named=True):
        g = res.filter((pl.col("strategy") == r["strategy"]) & (pl.col("kappa") == r["kappa"]))
        assert r["states_answer"] == pytest.approx(g["kept_states_answer"].mean())
        n_pruned = g["n_pruned"].sum()
        if n_pruned:
            assert r["pruned_steps_stating"] == pytest.approx(
                g["pruned_answer_steps"].sum() / n_pruned
            )
    # kappa 0 prunes nothing: the kept thinking is the whole thinking
    zero = res.filter(pl.col("kappa") == 0)
    assert (zero["n_pruned"] == 0).all()
    text = (Path(cfg.out) / "summary.md").read_text()
    assert "At equal token cost, `low`" in text and summary["headline"] in text
    assert pl.read_csv(f"{cfg.out}/scores.csv")["score"].to_list() == [
        "mean",
        "sampled",
        "surprisal",
    ]
    assert (Path(cfg.out) / "frontier.png").stat().st_size > 5000


def _eval_results(path: Path, rows: list[tuple], settings_over: dict | None = None) -> None:
    """Hand-made eval results: (problem_id, kappa, correct, original_tokens), and the
    eval_settings.json of an eval pruned with prune's defaults (``settings_over`` changes it)."""
    import pyarrow.parquet as pq

    from stepprune.schema import EVAL_RESULTS, to_table

    full = []
    for pid, kappa, correct, tokens in rows:
        full.append(
            dict.fromkeys(EVAL_RESULTS.arrow.names)
            | dict(
                problem_id=pid,
                sample_index=0,
                source="s",
                gold_answer="1",
                strategy="low",
                kappa=kappa,
                score="sum",
                budget="steps",
                seed=0,
                n_steps=4,
                n_skipped=0,
                original_thinking_tokens=8,
                kept_thinking_tokens=8,
                original_tokens=tokens,
                original_correct=True,
                n_pruned=0,
                kept_states_answer=False,
                pruned_answer_steps=0,
                pruned_arithmetic_steps=0,
                pruned_arithmetic_entropy=0.0,
                pruned_prose_entropy=0.0,
                entropy_source="exact",
                answer_prompt_tokens=5,
                answer_lead_in="",
                answer_text="1",
                answer_finish_reason="stop",
                extracted_answer="1",
                correct=correct,
                model="m",
                backend="hf",
                created_at="x",
            )
        )
    (path / "results").mkdir(parents=True)
    pq.write_table(to_table(full, EVAL_RESULTS), path / "results" / "part-0.parquet")
    settings = {"score": "sum", "budget": "steps", "protect_ends": False, "merge_skips": False}
    (path / "eval_settings.json").write_text(json.dumps({**settings, **(settings_over or {})}))


def test_verified_kappa_takes_the_largest_correct_kappa_per_trajectory(tmp_path):
    import pyarrow.parquet as pq

    from stepprune.schema import GENERATIONS, PRUNED, to_table
    from stepprune.shards import read_table
    from stepprune.stages.prune import PruneConfig, run

    ents = [[0.5, 0.5], [0.1], [0.3, 0.3, 0.3], [0.9]]
    rows = [make_row(f"p{i}", [f"s{j} text" for j in range(4)], ents) for i in range(3)]
    gen = tmp_path / "gen"
    gen.mkdir()
    pq.write_table(to_table(rows, GENERATIONS), gen / "part-0.parquet")
    n = rows[0]["n_tokens"]
    ev = tmp_path / "eval"
    grid = (0.0, 0.25, 0.5, 0.75, 1.0)
    right = {"p0": {0.0, 0.25, 0.5}, "p1": {0.0}, "p2": {0.0, 0.25, 1.0}}
    _eval_results(ev, [(p, k, k in right[p], n) for p in right for k in grid])
    for unverified, expected in (
        ("keep", {"p0": 0.5, "p1": 0.0, "p2": 1.0}),
        ("drop", {"p0": 0.5, "p2": 1.0}),
    ):
        out = tmp_path / f"out-{unverified}"
        run(
            PruneConfig(
                input=str(gen), out=str(out), kappa="verified", eval=str(ev), unverified=unverified
            )
        )
        got = read_table(out, PRUNED).to_pylist()
        assert {r["problem_id"]: r["kappa"] for r in got} == expected
        skipped = {r["problem_id"]: r["n_skipped"] for r in got}
        assert skipped == {p: math.floor(4 * k) for p, k in expected.items()}
        card = (out / "README.md").read_text()
        assert "| 0.5 | 1 |" in card and "| 1 | 1 |" in card
    _eval_results(tmp_path / "other", [("p0", 0.5, True, n + 1)])  # another run's p0
    with pytest.raises(ValueError, match=r"\('p0', 0\) has another token count"):
        run(
            PruneConfig(
                input=str(gen),
                out=str(tmp_path / "x"),
                kappa="verified",
                eval=str(tmp_path / "other"),
            )
        )
    _eval_results(tmp_path / "stranger", [("q9", 0.5, True, n)])
    with pytest.raises(ValueError, match=r"\('q9', 0\) is not in the input"):
        run(
            PruneConfig(
                input=str(gen),
                out=str(tmp_path / "y"),
                kappa="verified",
                eval=str(tmp_path / "stranger"),
            )
        )
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"score": "mean"}, "pruned otherwise \\(score: 'mean' there, 'sum' here\\)"),
        ({"protect_ends": True}, "protect_ends: True there, False here"),
        (None, "no eval_settings.json"),
    ],
)
def test_verified_kappa_refuses_an_eval_that_pruned_otherwise(tmp_path, over, message):
    import pyarrow.parquet as pq

    from stepprune.schema import GENERATIONS, to_table
    from stepprune.stages.prune import PruneConfig, run

    rows = [make_row("p0", [f"s{j} text" for j in range(4)], [[0.5], [0.1], [0.3], [0.9]])]
    gen = tmp_path / "gen"
    gen.mkdir()
    pq.write_table(to_table(rows, GENERATIONS), gen / "part-0.parquet")
    ev = tmp_path / "eval"
    _eval_results(ev, [("p0", 0.5, True, rows[0]["n_tokens"])], over)
    if over is None:
        (ev / "eval_settings.json").unlink()
    out = tmp_path / "out"
    with pytest.raises((ValueError, FileNotFoundError), match=message) as e:
        run(PruneConfig(input=str(gen), out=str(out), kappa="verified", eval=str(ev)))
    assert "\n" not in str(e.value) and not out.exists()


def _average_ranks(x: list[float]) -> list[float]:
    """Ranks 1..n with ties at their average, by sorting (a second route to polars' rank)."""
    order = sorted(range(len(x)), key=lambda i: x[i])
    ranks = [0.0] * len(x)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and x[order[j + 1]] == x[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    return ranks


def _pearson(a: list[float], b: list[float]) -> float:
    ma, mb = sum(a) / len(a), sum(b) / len(b)
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b, strict=True))
    va, vb = sum((x - ma) ** 2 for x in a), sum((y - mb) ** 2 for y in b)
    return cov / math.sqrt(va * vb) if va and vb else float("nan")


def test_headline_scores_and_step_classes_equal_a_recount(honest_eval, eval_cots):
    from stepprune.schema import EVAL_RESULTS, GENERATIONS
    from stepprune.shards import read_table

    cfg, summary = honest_eval
    res = read_table(f"{cfg.out}/results", EVAL_RESULTS).to_pylist()
    # the headline: low minus random-matched (its seeds averaged) per trajectory and 0 < kappa < 1
    cells: dict = {}
    for r in res:
        if 0 < r["kappa"] < 1 and r["strategy"] in ("low", "random-matched"):
            key = (r["source"], r["problem_id"], r["sample_index"], r["kappa"])
            cells.setdefault(key, {}).setdefault(r["strategy"], []).append(r["correct"])
    diffs = [
        sum(c["low"]) / len(c["low"]) - sum(c["random-matched"]) / len(c["random-matched"])
        for c in cells.values()
        if "low" in c and "random-matched" in c
    ]
    assert f"= {sum(diffs) / len(diffs):+.3f} [" in summary["headline"]
    assert f"{len(diffs)} trajectory-κ pairs" in summary["headline"]
    # scores.csv: Spearman of each step's mean entropy with its summed entropy
    gen = read_table(eval_cots, GENERATIONS).to_pylist()
    steps = [(i, s) for i, r in enumerate(gen) for s in r["steps"] if not s["is_skip"]]
    per = []
    for i in {i for i, _ in steps}:
        mine = [s for j, s in steps if j == i]
        if len(mine) >= 3:
            rho = _pearson(
                _average_ranks([s["entropy_sum"] for s in mine]),
                _average_ranks([s["entropy_mean"] for s in mine]),
            )
            if not math.isnan(rho):
                per.append(rho)
    row = pl.read_csv(f"{cfg.out}/scores.csv").filter(pl.col("score") == "mean").row(0, named=True)
    assert row["trajectories"] == len(per)  # the tiny CoTs: none with 3 steps (hand case below)
    if per:
        assert row["per_trajectory"] == pytest.approx(sum(per) / len(per))
    pooled = _pearson(
        _average_ranks([s["entropy_sum"] for _, s in steps]),
        _average_ranks([s["entropy_mean"] for _, s in steps]),
    )
    assert row["pooled"] == pytest.approx(pooled)
    # step_classes.csv: the share of pruned steps that do arithmetic, per strategy and kappa
    classes = pl.read_csv(f"{cfg.out}/step_classes.csv").filter(pl.col("kappa").is_not_null())
    for c in classes.iter_rows(named=True):
        g = [r for r in res if r["strategy"] == c["strategy"] and r["kappa"] == c["kappa"]]
        pruned = sum(r["n_pruned"] for r in g)
        assert c["steps"] == pruned
        if pruned:
            share = sum(r["pruned_arithmetic_steps"] for r in g) / pruned
            assert c["arithmetic_share"] == pytest.approx(share)


def test_score_correlations_per_trajectory_by_hand():
    import random

    from stepprune.evaluation.honest import score_correlations

    rng = random.Random(0)
    rows = []
    for r in range(6):  # trajectories of 2..7 steps, with ties (values on a coarse grid)
        for _ in range(2 + r):
            rows.append({"_r": r, **{k: rng.randint(0, 4) / 2 for k in SCORES}})
    steps = pl.DataFrame(rows)
    got = {row["score"]: row for row in score_correlations(steps).iter_rows(named=True)}
    for score in ("mean", "sampled", "surprisal"):
        per = []
        for r in range(6):
            mine = [x for x in rows if x["_r"] == r]
            if len(mine) >= 3:
                rho = _pearson(
                    _average_ranks([x["sum"] for x in mine]),
                    _average_ranks([x[score] for x in mine]),
                )
                if not math.isnan(rho):
                    per.append(rho)
        assert got[score]["trajectories"] == len(per) >= 3
        assert got[score]["per_trajectory"] == pytest.approx(sum(per) / len(per))
        pooled = _pearson(
            _average_ranks([x["sum"] for x in rows]), _average_ranks([x[score] for x in rows])
        )
        assert got[score]["pooled"] == pytest.approx(pooled)


SCORES = ("sum", "mean", "sampled", "surprisal")
