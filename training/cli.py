"""``zhserve-train``: train the embedded models, or write the dev splits their cards are scored on.

    zhserve-train all --data ../shared/data --out models          # both models, the shipped recipe
    zhserve-train ner --ner-epochs 1 --subset 0.1 --out runs/try  # a quick NER try
    zhserve-train sentiment --config models/sentiment/manifest.json --out runs/again   # a model's own recipe
    zhserve-train write-dev runs/dev                               # the dev splits, as JSONL for zhserve-eval
    zhserve-train encoder --data ../shared/data --out models       # the e5 sentiment tier (resumable)

The options are the fields of ``training.config`` (shared settings without a prefix, ``--ner-*`` and
``--sentiment-*`` for the recipes), validated before anything runs. ``--config`` starts from a run's
``config.json`` or a model directory's ``manifest.json`` (its ``provenance.config``); options given on the
command line override it. User errors (bad options, a missing data directory or file, malformed JSONL, the
[train] extra not installed) print one ``error:`` line and exit with status 2 (``training.errors``).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ValidationError

from training.config import NerRecipe, RunConfig, SentimentRecipe, Settings
from training.errors import UserError, existing_dir, run_cli

log = logging.getLogger("zhserve.train")

# Subcommand → the recipe sections it trains.
COMMANDS: dict[str, tuple[str, ...]] = {"all": ("ner", "sentiment"), "ner": ("ner",), "sentiment": ("sentiment",)}
SECTIONS: dict[str, tuple[type[BaseModel], str]] = {
    "settings": (Settings, ""),
    "ner": (NerRecipe, "ner-"),
    "sentiment": (SentimentRecipe, "sentiment-"),
}


class UsageError(UserError, ValueError):
    """A command line that does not describe a valid run."""


def key_values(text: str) -> dict[str, Any]:
    """A network override: a JSON object, or ``KEY=VALUE`` (VALUE read as JSON, else as a string)."""
    text = text.strip()
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
        return value
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE or a JSON object, got {text!r}")
    try:
        return {key: json.loads(raw)}
    except json.JSONDecodeError:
        return {key: raw}


def _add_fields(parser: argparse.ArgumentParser, section: str) -> None:
    """One option per field of the section's model; defaults stay in the model (argparse records only what
    the command line gives, so ``--config`` values survive unless overridden)."""
    model, prefix = SECTIONS[section]
    group = parser.add_argument_group(f"{section} ({model.__doc__.splitlines()[0] if model.__doc__ else ''})")
    for name, field in model.model_fields.items():
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").replace("%", "%%") + f" (default: {default!r})".replace("%", "%%")
        options: dict[str, Any] = {"dest": f"{section}.{name}", "default": argparse.SUPPRESS, "help": help_text}
        annotation = field.annotation
        origin = typing.get_origin(annotation)
        if annotation is bool:
            options["action"] = "store_true"
        elif origin is Literal:
            options["choices"] = typing.get_args(annotation)
        elif origin is list:
            (options["type"],) = typing.get_args(annotation)
            options["nargs"] = "+"
        elif origin is dict:
            options.update(type=key_values, action="append", metavar="KEY=VALUE")  # repeatable
        elif origin in (typing.Union, types.UnionType):
            (options["type"],) = [a for a in typing.get_args(annotation) if a is not type(None)]
        else:
            options["type"] = annotation
        if "choices" not in options and "action" not in options:
            options["metavar"] = name.upper()
        group.add_argument("--" + prefix + name.replace("_", "-"), **options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zhserve-train", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    helps = {
        "all": "train NER and sentiment (side by side in two processes unless --sequential)",
        "ner": "train the NER model",
        "sentiment": "train the sentiment model",
    }
    for command, sections in COMMANDS.items():
        sub = commands.add_parser(command, help=helps[command])
        sub.add_argument(
            "--config",
            type=Path,
            help="start from a run's config.json or a model directory's manifest.json (its provenance.config)",
        )
        if command == "all":
            sub.add_argument(
                "--sequential", action="store_true", default=argparse.SUPPRESS, help="one model after the other"
            )
        for section in ("settings", *sections):
            _add_fields(sub, section)
    commands.add_parser(
        "encoder",
        add_help=False,
        help="rebuild models/sentiment-e5 on the e5 encoder (training.encoder.pipeline; `encoder --help`)",
    )
    dev = commands.add_parser(
        "write-dev", help="write the dev splits the model cards are scored on as DIR/<split>.jsonl"
    )
    dev.add_argument("dir", type=Path, metavar="DIR")
    dev.add_argument("--data", default=Settings.model_fields["data"].default, help="corpora directory")
    dev.add_argument("--seed", type=int, default=Settings.model_fields["seed"].default)
    dev.add_argument("--split-seed", type=int, help="seed of the dev carving (default: --seed)")
    dev.add_argument(
        "--sentiment-hold-out", choices=("fruit", "none"), default="none", help="fruit: also write unseen_fruit"
    )
    return parser


def _load_config_file(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"--config {path}: {exc}") from exc
    if isinstance(document, dict) and "provenance" in document:  # a model directory's manifest
        document = document["provenance"].get("config")
        if not isinstance(document, dict):
            raise UsageError(f"--config {path}: the manifest records no training config (provenance.config)")
    if not isinstance(document, dict):
        raise UsageError(f"--config {path}: expected a JSON object")
    return document


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run an already parsed command line describes: ``--config`` (if any), then the options given."""
    base = _load_config_file(args.config) if args.config else {}
    sections = COMMANDS[args.command]
    document: dict[str, Any] = {"settings": dict(base.get("settings") or {})}
    for section in ("ner", "sentiment"):
        document[section] = dict(base.get(section) or {}) if section in sections else None
    if args.command == "all":
        document["sequential"] = base.get("sequential", False)
    for dest, value in vars(args).items():
        if dest == "sequential":
            document["sequential"] = value
        if "." not in dest:
            continue
        section, name = dest.split(".", 1)
        if isinstance(value, list) and value and isinstance(value[0], dict):  # KEY=VALUE overrides
            merged = dict(document[section].get(name) or {})
            for item in value:
                merged.update(item)
            value = merged
        document[section][name] = value
    try:
        return RunConfig.model_validate(document)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'config'}: {error['msg']}" for error in exc.errors()
        )
        raise UsageError(problems) from exc


def parse(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, RunConfig | None]:
    """The parsed command line and, for a training command, its validated run config."""
    args = build_parser().parse_args(argv)
    return args, (None if args.command == "write-dev" else config_from_args(args))


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    argv = list(sys.argv[1:] if argv is None else argv)
    return run_cli("zhserve-train", lambda: _run(argv))


def _run(argv: list[str]) -> int:
    if argv[:1] == ["encoder"]:  # its own options: training.encoder.pipeline
        from training.encoder.pipeline import main as encoder_main

        return encoder_main(argv[1:])
    args, config = parse(argv)
    if config is None:
        from training import data as D

        existing_dir(args.data, "--data")
        seed = args.seed if args.split_seed is None else args.split_seed
        hold_out_fruit = args.sentiment_hold_out == "fruit"
        for name, path in D.write_dev_splits(args.data, args.dir, seed=seed, hold_out_fruit=hold_out_fruit).items():
            log.info("dev split %s: %s", name, path)
        return 0
    existing_dir(config.settings.data, "--data")
    from training.run import train

    return train(config)


if __name__ == "__main__":
    raise SystemExit(main())
