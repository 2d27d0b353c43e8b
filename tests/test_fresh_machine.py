"""The packaged-model path on a machine that never ran anything: an empty cache, in each venv a
README command uses (``.venv`` for the CLI, ``.venv-vllm`` for the vLLM runs).

The README's Qwen runs once failed on a fresh machine: ``.venv-vllm`` had neither ``gguf`` nor
``accelerate``, which transformers needs to read a GGUF, and a warm ``~/.cache/stepprune`` hid
it. The GGUF here is the embedded SmolLM2's (the Qwen one is 400 MB and converts to 2.5 GB); the
conversion code is the one every packaged name goes through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
VLLM_PY = Path(os.environ.get("STEPPRUNE_VLLM_PYTHON", REPO / ".venv-vllm" / "bin" / "python"))

CONVERT = """
import json, sys
from pathlib import Path
from stepprune.models import cache_dir, convert_gguf
from transformers import AutoConfig, AutoTokenizer
target = convert_gguf(Path(sys.argv[1]), cache_dir() / "models" / "converted")
config, tok = AutoConfig.from_pretrained(target), AutoTokenizer.from_pretrained(target)
print(json.dumps({"target": str(target), "layers": config.num_hidden_layers,
                  "ids": tok("3 + 5 = 8")["input_ids"]}))
"""


def _convert(python: str, gguf: Path, cache: Path) -> dict:
    env = {**os.environ, "STEPPRUNE_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [python, "-c", CONVERT, str(gguf)], env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_packaged_default_resolves_with_an_empty_cache(tmp_path):
    env = {**os.environ, "STEPPRUNE_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    code = "from stepprune.models import resolve_model; print(resolve_model(None))"
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    path = Path(proc.stdout.strip().splitlines()[-1])
    assert path.parent == tmp_path / "cache" / "models" and (path / "config.json").exists()
    assert any(path.glob("*.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize("venv", [".venv", ".venv-vllm"])
def test_gguf_conversion_works_in_each_venv_with_an_empty_cache(venv, tmp_path):
    from stepprune.models import embedded_gguf

    python = sys.executable if venv == ".venv" else str(VLLM_PY)
    if venv == ".venv-vllm" and not VLLM_PY.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{VLLM_PY} missing: .ci/test must run .ci/setup-vllm in CI")
        pytest.skip(f"no vllm venv at {VLLM_PY}")
    out = _convert(python, embedded_gguf(), tmp_path / "cache")
    assert Path(out["target"]).parent == tmp_path / "cache" / "models"
    assert out["layers"] == 30 and len(out["ids"]) > 3  # SmolLM2-135M: 30 layers
