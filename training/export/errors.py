"""The errors ``zhserve-models`` reports to its user. Each message says what was found and what is allowed."""

from __future__ import annotations

from training.errors import UserError


class ExportError(UserError):
    """Any failure the CLI reports as a one-line message (exit status 2) instead of a traceback."""


class UnknownModelTypeError(ExportError):
    """The source directory holds a model type this exporter cannot rebuild."""


class MissingLabelMappingError(ExportError):
    """No label mapping in label_mapping.json, configuration.json or config.json."""


class SourceLayoutError(ExportError):
    """A required file is missing or malformed in the source directory."""


class StateDictMismatchError(ExportError):
    """The checkpoint's keys or shapes do not fit the architecture."""


class DownloadError(ExportError):
    """The ModelScope hub could not deliver the model."""


class CheckFailedError(ExportError):
    """The exported graph disagrees with torch, or INT8 disagrees with FP32, beyond the allowed limit."""
