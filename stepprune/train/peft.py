"""LoRA for sft and grpo: ``lora_config`` turns a recipe's ``lora`` mapping into
``peft.LoraConfig`` for a causal LM, with an unknown key reported as a ``ValueError``."""

from __future__ import annotations


def lora_config(lora: dict):
    """``peft.LoraConfig`` of a causal LM from ``lora`` (which may set ``task_type`` itself).

    An unknown key is a ``ValueError`` naming it: the CLI reports those, not ``TypeError``.
    """
    from peft import LoraConfig

    try:
        return LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    except TypeError as e:
        raise ValueError(f"lora: {e}") from e
