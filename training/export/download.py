"""Where the source model comes from: a local directory, or a ModelScope hub download."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from training.export.errors import DownloadError, ExportError

MODEL_ID_PATTERN = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class FetchedSource:
    path: Path
    model_id: str | None  # None for a local directory
    revision: str | None
    from_hub: bool


def fetch_source(source: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> FetchedSource:
    """A local model directory as is, or a ModelScope model id downloaded with ``snapshot_download``.

    Downloads resume: ``snapshot_download`` keeps finished files in its cache and re-fetches only
    what is missing, so re-running after an interruption continues where it stopped.
    """
    local = Path(source).expanduser()
    if local.exists():
        if not local.is_dir():
            raise ExportError(f"--source {source}: a file; give a ModelScope model directory or model id")
        return FetchedSource(path=local.resolve(), model_id=None, revision=revision, from_hub=False)
    if not MODEL_ID_PATTERN.match(source):
        raise ExportError(
            f"--source {source!r} is neither an existing directory nor a ModelScope model id "
            "(owner/name, e.g. damo/nlp_raner_named-entity-recognition_chinese-base-news)"
        )
    return download(source, revision=revision, cache_dir=cache_dir)


def download(model_id: str, *, revision: str | None = None, cache_dir: str | Path | None = None) -> FetchedSource:
    """``modelscope.hub.snapshot_download.snapshot_download`` with its failures turned into one message."""
    try:
        from modelscope.hub.snapshot_download import snapshot_download
    except ImportError as exc:
        raise ExportError(
            f"downloading from the ModelScope hub needs the 'modelscope' package ({exc}); "
            "install the export extra: pip install '.[export]'"
        ) from None
    kwargs: dict[str, object] = {}
    if revision:
        kwargs["revision"] = revision
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        path = snapshot_download(model_id, **kwargs)
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # the hub client raises network, HTTP, auth and file errors alike
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if len(reason) > 300:
            reason = reason[:300] + "…"
        raise DownloadError(
            f"could not download {model_id} (revision {revision or 'default'}) from the ModelScope hub: "
            f"{type(exc).__name__}: {reason}. Check network access (MODELSCOPE_DOMAIN, proxies), or "
            "download the model elsewhere and pass its directory with --source DIR; a re-run resumes "
            "a partial download."
        ) from None
    return FetchedSource(path=Path(path).resolve(), model_id=model_id, revision=revision, from_hub=True)
