"""Tiny random models with a real byte-level BPE tokenizer, built offline in seconds: for the
tests, and for checks on machines without network (benchmarks/gpu_check.py)."""

from __future__ import annotations

from pathlib import Path

ARCHS = {"qwen2": ("Qwen2Config", "Qwen2ForCausalLM"), "llama": ("LlamaConfig", "LlamaForCausalLM")}

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

QWEN2_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CORPUS = [
    "Tom has 3 apples and buys 5 more. 3 + 5 = 8.\n\nSo the answer is \\boxed{8}.",
    "First, compute the total.\n\nThen divide by 4: 12 / 4 = 3.\n\nThe final answer is 3.",
    "Let x be the number of eggs. 2x = 10, so x = 5.\n\n<think>\n\n</think>\n\n[SKIP]",
    "Über café naïve — 数学 ∑ ∫ √2 ≈ 1.414\n\n\n\nStep: (a+b)^2 = a^2 + 2ab + b^2.",
]


def tiny_tokenizer():
    """A byte-level BPE tokenizer trained on ``CORPUS`` (vocabulary 400, chat template)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    # transformers rebuilds a qwen2 tokenizer with this exact pipeline (NFC, Qwen2's split regex,
    # byte-level); training with it keeps tokenizer.json, AutoTokenizer and vLLM in agreement.
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(CORPUS * 20, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        chat_template=CHAT_TEMPLATE,
    )


def make_tiny_model(path: Path, seed: int = 0, arch: str = "qwen2") -> Path:
    """``tiny_tokenizer`` and a random 2-layer model (``arch`` qwen2 or llama; hidden 64,
    head_dim 64, vocabulary padded to a multiple of 64)."""
    import torch
    import transformers

    if arch not in ARCHS:
        raise ValueError(f"arch {arch!r}: one of {', '.join(ARCHS)}")
    fast = tiny_tokenizer()
    config_cls, model_cls = (getattr(transformers, name) for name in ARCHS[arch])
    config = config_cls(
        vocab_size=(len(fast) + 63) // 64 * 64,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=1,
        num_key_value_heads=1,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
        bos_token_id=None,
    )
    torch.manual_seed(seed)
    model = model_cls(config)
    # Larger-than-default logits make the random model's distributions non-uniform, so the
    # entropy tests compare values that actually vary from token to token.
    with torch.no_grad():
        model.lm_head.weight.mul_(15.0)
    model.generation_config.eos_token_id = fast.eos_token_id
    model.save_pretrained(path)
    fast.save_pretrained(path)
    return path
