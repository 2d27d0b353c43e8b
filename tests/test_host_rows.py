"""The host-throughput changes leave generate's rows as they were: rows built from vLLM's flat
log-probs with byte-level char offsets equal rows built from per-token dicts with the
incremental decode (the code before), ``created_at`` aside; through the generate loop the host
benchmark times (benchmarks/bench_host_ceiling.py)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_host_ceiling as bench  # noqa: E402


def rows_for(model_dir, outputs, tmp: Path, monkeypatch, slow: bool) -> list[dict]:
    import pyarrow.parquet as pq

    import stepprune.cot.steps as steps
    from stepprune.data.load import Problem
    from stepprune.stages.generate import GenerateConfig

    if slow:  # the code before: every completion through the incremental decode
        monkeypatch.setattr(steps, "token_char_offsets", steps.incremental_offsets)
        import stepprune.cot.trajectory as trajectory

        monkeypatch.setattr(trajectory, "token_char_offsets", steps.incremental_offsets)
    cfg = GenerateConfig(model=str(model_dir), backend="vllm")
    problems = [Problem(f"p{i}", "t", f"What is {i} + {i}?", "72") for i in range(4)]
    engine = bench.fake_engine(str(model_dir), outputs, None)
    bench.run_generate(cfg, engine, problems, tmp)
    monkeypatch.undo()
    rows = pq.read_table(sorted(tmp.glob("*.parquet"))).to_pylist()
    return [{k: v for k, v in r.items() if k != "created_at"} for r in rows]


def test_flat_logprobs_and_byte_offsets_build_the_rows_of_before(
    tiny_model_dir, data_dir, tmp_path, monkeypatch
):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    odd = ["Ünïcödé: 数学 ≈ √2 😀 = 1.414", "[SKIP]"] * 10  # multi-byte chars, [SKIP] steps
    steps = bench.solution_steps(str(data_dir))[:40] + odd
    made = {}
    for flat in (False, True):
        rng = random.Random(0)
        made[flat] = [
            bench.completion(tok, tok.eos_token_id, 300, steps, rng, 20, flat) for _ in range(2)
        ]
    before = rows_for(tiny_model_dir, made[False], tmp_path / "before", monkeypatch, slow=True)
    now = rows_for(tiny_model_dir, made[True], tmp_path / "now", monkeypatch, slow=False)
    assert len(before) == len(now) == 4
    assert before == now
    assert all(r["n_steps"] > 3 and r["entropy_source"] == "topk" for r in now)
    assert any("数学" in r["completion"] for r in now)  # the multi-byte path ran
