"""benchmarks/gpu_check.py runs here with --device cpu, so the check a lent GPU runs keeps
working: every figure is present and says what it should on the CPU."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_gpu_check_runs_on_the_cpu(tmp_path):
    cmd = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--device", "cpu"]
    cmd += ["--prompts", "3", "--new-tokens", "8", "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["device"] == "cpu"
    for arch in ("qwen2", "llama"):
        r = report[arch]
        assert r["rows_built"] == 3 and 3 <= r["generate_tokens"] <= 24
        # the same device and dtype as the reference: the generation's own entropies agree
        assert r["entropy_max_diff_vs_cpu"] < 1e-4
        # bf16 really ran: its entropies differ from float32, by bf16's precision, not more
        assert 1e-4 < r["score_bf16_max_diff_vs_fp32"] < 0.2
        for step in ("sft", "grpo"):
            assert isinstance(r[step], dict), r[step]  # TRL is installed here
            assert math.isfinite(r[step]["loss"]) and r[step]["device"] == "cpu"
            assert r[step]["max_weight_change"] > 0  # the step moved the weights
        assert f"{arch:6s} entropy_max_diff_vs_cpu:" in done.stdout
