"""LoRA for sft and grpo: ``lora_config`` turns a recipe's ``lora`` mapping into
``peft.LoraConfig`` for a causal LM, with an unknown key reported as a ``ValueError``; ``merge``
writes a trained adapter merged into full weights (``OUT/merged``) for vLLM and bench."""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)


def lora_config(lora: dict):
    """``peft.LoraConfig`` of a causal LM from ``lora`` (which may set ``task_type`` itself).

    An unknown key is a ``ValueError`` naming it: the CLI reports those, not ``TypeError``.
    """
    from peft import LoraConfig

    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    except TypeError as e:
        raise ValueError(f"lora: {e}") from e


def merge(trainer, tokenizer, out: Path) -> Path:
    """LoRA merged into full weights at ``out/merged``; a full fine-tune already is: ``out``."""
    model = trainer.accelerator.unwrap_model(trainer.model)
    if not hasattr(model, "merge_and_unload"):
        log.info("full fine-tune: %s already holds full weights, nothing to merge", out)
        return out
    target = out / "merged"
    model.merge_and_unload().save_pretrained(target)
    tokenizer.save_pretrained(target)
    log.info("merged weights in %s", target)
    return target
