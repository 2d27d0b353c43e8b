"""Grader agreement: stepprune's grader and math-verify (called as open-r1 calls it) against the
hand-labelled cases of tests/data/grading_cases.jsonl (made by tests/data/make_grading_cases.py
from the built-in sets' real golds).

    .venv/bin/python benchmarks/bench_grading_agreement.py [--kinds]

A grader is right on a case when its verdict equals the case's label. stepprune:
``grade(pred, gold).correct``. math-verify, as open-r1's ``accuracy_reward``:
``parse(solution, extraction_mode="first_match")`` with the gold as ``\\boxed{gold}`` (the
solutions open-r1 trains on box their answer; ``--bare-gold`` passes it bare, which math-verify
mostly misreads: ``1,3,5`` -> 1.3); the completion parsed with its LatexExtractionConfig (units
and equations normalised, \\boxed first, no match without an anchor);
``verify(gold_parsed, pred_parsed)``. When the gold does not parse, open-r1 skips the case (reward
None); here that counts as not right, and the table says how many there were.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from pathlib import Path

from stepprune.data.grading import grade

CASES = Path(__file__).resolve().parents[1] / "tests/data/grading_cases.jsonl"
# Kinds grouped for the short table.
FAMILIES = {
    "rewrite_thousands": "rewrite: number written another way",
    "rewrite_currency": "rewrite: number written another way",
    "rewrite_decimal_point": "rewrite: number written another way",
    "rewrite_trailing_point": "rewrite: number written another way",
    "rewrite_assignment": "rewrite: number written another way",
    "rewrite_leading_zero": "rewrite: number written another way",
    "rewrite_scientific": "rewrite: number written another way",
    "rewrite_fraction": "rewrite: fraction <-> decimal, percent",
    "rewrite_decimal": "rewrite: fraction <-> decimal, percent",
    "rewrite_percent": "rewrite: fraction <-> decimal, percent",
    "rewrite_dfrac": "rewrite: LaTeX presentation",
    "rewrite_spacing": "rewrite: LaTeX presentation",
    "rewrite_left_right": "rewrite: LaTeX presentation",
    "rewrite_units": "rewrite: a unit added or dropped",
    "rewrite_text": "rewrite: words (\\text{}, case)",
    "rewrite_case": "rewrite: words (\\text{}, case)",
    "miss_off_by_one": "miss: off by one",
    "miss_sign": "miss: sign",
    "miss_digit_swap": "miss: digits (swap, last digit)",
    "miss_last_digit": "miss: digits (swap, last digit)",
    "miss_fraction_vs_decimal": "miss: fraction vs decimal",
    "miss_rounded": "miss: fraction vs decimal",
    "miss_reciprocal": "miss: fraction vs decimal",
    "miss_literal": "miss: expression literal changed",
    "miss_fragment": "miss: fragment of the gold",
    "miss_other_word": "miss: words and times",
    "miss_truncated": "miss: words and times",
    "miss_time_as_fraction": "miss: words and times",
}


def open_r1_verdict(completion: str, solution: str) -> bool | None:
    """open-r1's accuracy_reward on one completion: True/False, None when it skips the case."""
    from latex2sympy2_extended import NormalizationConfig
    from math_verify import LatexExtractionConfig, parse, verify

    gold_parsed = parse(solution, extraction_mode="first_match")
    if len(gold_parsed) == 0:
        return None
    normal = NormalizationConfig(
        nits=False,
        malformed_operators=False,
        basic_latex=True,
        equations=True,
        boxed="all",
        units=True,
    )
    config = LatexExtractionConfig(
        normalization_config=normal, boxed_match_priority=0, try_extract_without_anchor=False
    )
    pred_parsed = parse(completion, extraction_config=[config], extraction_mode="first_match")
    try:
        return bool(verify(gold_parsed, pred_parsed))
    except Exception:
        return None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kinds", action="store_true", help="one row per kind, not per family")
    ap.add_argument("--bare-gold", action="store_true", help="math-verify parses the bare gold")
    args = ap.parse_args()
    logging.disable(logging.WARNING)  # math-verify logs every unparseable completion
    rows = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # cases, ours, mv, mv skipped
    for row in rows:
        group = row["kind"] if args.kinds else FAMILIES.get(row["kind"], row["kind"])
        ours = grade(row["pred"], row["gold"]).correct
        solution = row["gold"] if args.bare_gold else f"\\boxed{{{row['gold']}}}"
        theirs = open_r1_verdict(row["pred"], solution)
        for key in (group, "all"):
            counts = tally[key]
            counts[0] += 1
            counts[1] += ours == row["label"]
            counts[2] += theirs == row["label"]
            counts[3] += theirs is None
    print("| kind | cases | stepprune correct | math-verify correct | math-verify skipped |")
    print("|---|---|---|---|---|")
    for key in sorted(tally, key=lambda k: (k == "all", k)):
        n, ours, theirs, skipped = tally[key]
        print(f"| {key} | {n} | {100 * ours / n:.1f} % | {100 * theirs / n:.1f} % | {skipped} |")


if __name__ == "__main__":
    main()
