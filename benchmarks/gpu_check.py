"""GPU check (issue #25): stepprune's CUDA paths on tiny random Qwen2 and Llama models built
offline, in under 8 minutes, for the rare session that is lent a GPU machine. It also runs with
``--device cpu``, which the test suite does, so it keeps working between GPU sessions.

For each architecture:

1. ``generate`` with the hf backend and exact entropy: ``--prompts`` prompts of
   ``--new-tokens`` sampled tokens on the device, rows built by ``cot.trajectory.build_row``;
   tokens/s, and the largest difference between the device's per-token entropies and a float32
   teacher-forced rescoring of the same tokens on the CPU.
2. ``score``: exact rescoring of those completions on the device in bfloat16 against float32
   (largest entropy difference, and the bf16 rescoring's tokens/s).
3. One SFT step and one GRPO step (TRL) on the device: the loss is finite and the weights move.
   The GPU machine has no TRL: ``--wheels DIR`` installs it first from wheels carried there
   (``pip download --no-deps trl`` and its small pure-Python dependencies); without TRL the two
   steps are reported as missing, never silently passed.

Prints one line per figure and writes ``--out/gpu_check.json``. Usage:

    python benchmarks/gpu_check.py --device cuda --out "$OUT"    # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --prompts 2 --new-tokens 8   # here, as the test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def generate_check(model_dir: Path, device: str, prompts: int, new_tokens: int) -> tuple:
    import torch

    from stepprune.backends import SamplingSpec
    from stepprune.backends.hf import HFBackend
    from stepprune.backends.rescore import Rescorer
    from stepprune.cot.trajectory import RunInfo, build_row
    from stepprune.data.load import Problem
    from stepprune.data.prompts import DEFAULT_PROMPT, chat_prompt

    backend = HFBackend(str(model_dir), dtype="float32", device=device)
    tok = backend.tokenizer
    problems = [
        Problem(f"p{i}", "check", f"What is {i} plus {i}?", str(2 * i)) for i in range(prompts)
    ]
    texts = [
        tok.apply_chat_template(
            chat_prompt(p.problem, DEFAULT_PROMPT), add_generation_prompt=True, tokenize=False
        )
        for p in problems
    ]
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    spec = SamplingSpec(temperature=1.0, top_p=1.0, max_new_tokens=new_tokens, seed=0)
    _sync(device)
    start = time.perf_counter()
    comps = backend.generate(ids, spec)
    _sync(device)
    seconds = time.perf_counter() - start
    info = RunInfo(model="tiny", backend="hf", sampling={}, versions={}, step_pattern=r"\n\s*\n")
    rows = [
        build_row(p, 0, t, i, c, tok, backend.stop_ids, info, 0)
        for p, t, i, c in zip(problems, texts, ids, comps, strict=True)
    ]
    cpu = Rescorer(str(model_dir), dtype="float32", device="cpu").score(
        [(i, c.token_ids) for i, c in zip(ids, comps, strict=True)]
    )
    diff = max(
        float(torch.tensor(c.entropies).sub(torch.tensor(e)).abs().max())
        for c, (e, _) in zip(comps, cpu, strict=True)
    )
    n_tokens = sum(len(c.token_ids) for c in comps)
    result = {
        "generate_tok_s": n_tokens / seconds,
        "generate_tokens": n_tokens,
        "entropy_max_diff_vs_cpu": diff,
        "rows_built": len(rows),
        "rows_steps": sum(r["n_steps"] for r in rows),
    }
    return result, [(i, c.token_ids) for i, c in zip(ids, comps, strict=True)]


def score_check(model_dir: Path, device: str, pairs: list) -> dict:
    import torch

    from stepprune.backends.rescore import Rescorer

    fp32 = Rescorer(str(model_dir), dtype="float32", device=device).score(pairs)
    bf16 = Rescorer(str(model_dir), dtype="bfloat16", device=device)
    _sync(device)
    start = time.perf_counter()
    low = bf16.score(pairs)
    _sync(device)
    seconds = time.perf_counter() - start
    diff = max(
        float(torch.tensor(a).sub(torch.tensor(b)).abs().max())
        for (a, _), (b, _) in zip(fp32, low, strict=True)
    )
    tokens = sum(len(c) for _, c in pairs)
    return {"score_bf16_tok_s": tokens / seconds, "score_bf16_max_diff_vs_fp32": diff}


def train_checks(model_dir: Path, device: str, work: Path) -> dict:
    """One SFT and one GRPO step with TRL on ``device``: loss finite, weights moved."""
    try:
        import trl  # noqa: F401
    except ImportError:
        return {"sft": "missing: trl is not installed (--wheels DIR)", "grpo": "missing: trl"}
    return {"sft": _sft_step(model_dir, device, work), "grpo": _grpo_step(model_dir, device, work)}


def _common(device: str) -> dict:
    return dict(
        max_steps=1,
        learning_rate=1e-3,
        per_device_train_batch_size=2,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        bf16=False,
        use_cpu=device == "cpu",
        logging_steps=1,
    )


def _one_step(trainer) -> dict:
    """Train ``trainer`` (one step): its loss, time, device and largest weight change."""
    before = {n: p.detach().cpu().clone() for n, p in trainer.model.named_parameters()}
    start = time.perf_counter()
    out = trainer.train()
    return {
        "loss": out.training_loss,
        "seconds": time.perf_counter() - start,
        "device": str(next(trainer.model.parameters()).device),
        "max_weight_change": _moved(before, trainer.model),
    }


def _moved(before: dict, model) -> float:
    return max(
        float((p.detach().cpu() - before[n]).abs().max()) for n, p in model.named_parameters()
    )


def _sft_step(model_dir: Path, device: str, work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    rows = [
        {
            "prompt": [{"role": "user", "content": f"{i} apples?"}],
            "completion": [{"role": "assistant", "content": f"So {i}.\n\n\\boxed{{{i}}}"}],
        }
        for i in range(4)
    ]
    args = SFTConfig(output_dir=str(work / "sft"), max_length=64, **_common(device))
    trainer = SFTTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(model_dir),
    )
    return _one_step(trainer)


def ids_mod_7(prompts=None, completions=None, completion_ids=None, **kwargs) -> list[float]:
    """A reward that varies between rollouts of random weights (sum of ids mod 7), so the
    GRPO step has a gradient."""
    return [float(sum(ids) % 7) for ids in completion_ids]


def _grpo_step(model_dir: Path, device: str, work: Path) -> dict:
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    rows = [{"prompt": [{"role": "user", "content": f"{i} apples?"}]} for i in range(2)]
    common = {**_common(device), "per_device_train_batch_size": 4}
    args = GRPOConfig(
        output_dir=str(work / "grpo"),
        num_generations=4,
        max_completion_length=16,
        temperature=1.0,
        **common,
    )
    tok = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    trainer = GRPOTrainer(
        model=str(model_dir),
        args=args,
        train_dataset=Dataset.from_list(rows),
        reward_funcs=ids_mod_7,
        processing_class=tok,
    )
    return _one_step(trainer)


def _sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def install_wheels(folder: str) -> None:
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--find-links", folder]
    subprocess.run([*cmd, *sorted(str(p) for p in Path(folder).glob("*.whl"))], check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--wheels", default=None, help="install TRL and friends from these wheels")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.wheels:
        install_wheels(a.wheels)
    import torch

    from stepprune.tiny_model import make_tiny_model

    report = {"device": a.device, "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}
    if a.device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("qwen2", "llama"):
            model = make_tiny_model(Path(tmp) / arch, arch=arch)
            result, pairs = generate_check(model, a.device, a.prompts, a.new_tokens)
            result.update(score_check(model, a.device, pairs))
            result.update(train_checks(model, a.device, Path(tmp) / f"{arch}-train"))
            report[arch] = result
            for key, value in result.items():
                print(f"{arch:6s} {key}: {value}")
    if a.out:
        Path(a.out).mkdir(parents=True, exist_ok=True)
        (Path(a.out) / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    main()
