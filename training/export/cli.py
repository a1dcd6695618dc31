"""``zhserve-models``: export ModelScope models to zhserve model directories, or build shape twins.

    zhserve-models export --task ner \
        --source damo/nlp_raner_named-entity-recognition_chinese-base-news --out models/raner-base
    zhserve-models export --task sentiment --source ./structbert-dir --out models/structbert-base --no-int8
    zhserve-models twin --task ner --size base --out runs/twins/raner-src

Failures print one ``error:`` line and exit with status 2; no traceback (``training.errors``): a source
that cannot be read or downloaded, a bad output path, the [export] extra not installed.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from training.errors import run_cli


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhserve-models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    export = commands.add_parser("export", help="ModelScope model (hub id or local dir) → zhserve model directory")
    export.add_argument("--task", choices=("ner", "sentiment"), required=True)
    export.add_argument("--source", required=True, help="ModelScope model id (owner/name) or a local model directory")
    export.add_argument("--out", required=True, help="the zhserve model directory to write")
    export.add_argument("--revision", default=None, help="hub revision (tag or branch) to download")
    export.add_argument("--no-int8", dest="int8", action="store_false", help="ship FP32; skip quantisation")
    export.add_argument("--cache-dir", default=None, help="ModelScope download cache (default: its own)")
    export.add_argument("--keep-fp32", action="store_true", help="also keep model.fp32.onnx (not in the manifest)")
    export.add_argument("--overwrite", action="store_true", help="replace a non-empty --out")
    export.add_argument("--name", default=None, help="manifest name (default: from the model id or directory)")
    export.add_argument("--version", default=None, help="manifest version (default: the revision, or 'local')")

    twin = commands.add_parser("twin", help="a random-weight model directory in the exact ModelScope layout")
    twin.add_argument("--task", choices=("ner", "sentiment"), required=True)
    twin.add_argument("--size", choices=("base", "tiny"), default="base")
    twin.add_argument("--out", required=True)
    twin.add_argument("--seed", type=int, default=0)
    twin.add_argument(
        "--no-head-prefix", dest="head_prefix", action="store_false",
        help="NER: write head keys as linear.*/crf.* instead of head.linear.*/head.crf.*",
    )  # fmt: skip
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_cli("zhserve-models", lambda: _export(args) if args.command == "export" else _twin(args))


def _export(args: argparse.Namespace) -> int:
    from training.export.exporter import STEPS, export_model
    from training.export.progress import StepPrinter

    progress = StepPrinter(len(STEPS))
    result = export_model(
        args.task,
        args.source,
        args.out,
        revision=args.revision,
        int8=args.int8,
        cache_dir=args.cache_dir,
        keep_fp32=args.keep_fp32,
        overwrite=args.overwrite,
        name=args.name,
        version=args.version,
        progress=progress,
    )
    manifest = result.manifest
    print(f"model directory: {result.out}  ({manifest.model_id}, {manifest.quantization})")
    print(f"ONNX FP32: {result.fp32_bytes / 2**20:.1f} MiB", end="")
    print(f"   INT8: {result.int8_bytes / 2**20:.1f} MiB" if result.int8_bytes is not None else "")
    print(f"parity: max |ONNX − torch| {result.parity.max_abs_diff:.2e}", end="")
    if result.parity.crf_paths_identical is not None:
        print(f", CRF paths identical: {result.parity.crf_paths_identical}", end="")
    print()
    if result.agreement is not None:
        print(f"INT8 {result.agreement.metric}: {result.agreement.value:.1%}")
    print(f"total {result.seconds:.1f} s")
    return 0


def _twin(args: argparse.Namespace) -> int:
    from training.export.twin import build_twin

    started = time.perf_counter()
    print(f"building a {args.size} {args.task} twin in {args.out} …", file=sys.stderr, flush=True)
    path = build_twin(args.task, args.size, args.out, seed=args.seed, head_prefix=args.head_prefix)
    print(f"wrote {path} in {time.perf_counter() - started:.1f} s (random weights, ModelScope layout)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
