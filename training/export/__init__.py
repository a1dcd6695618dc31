"""Turn ModelScope RaNER / StructBERT checkpoints into zhserve model directories.

Needs the ``[export]`` extra (torch, transformers, modelscope, onnx); the serving code never imports
this package. Entry point: the ``zhserve-models`` console script (:mod:`training.export.cli`).
"""

EXPORTER_NAME = "zhserve-models"
EXPORTER_VERSION = "1.0.0"
