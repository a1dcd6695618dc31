"""``python -m training.train``: the flat command line of earlier releases, translated to ``zhserve-train``.

    python -m training.train --task ner --ner-epochs 1 --subset 0.1 --out runs/try
      ≡ zhserve-train ner --ner-epochs 1 --subset 0.1 --out runs/try

``--task all|ner|sentiment`` (default all) becomes the subcommand and ``--write-dev DIR`` the
``write-dev`` subcommand; the options renamed since are mapped below. See ``training/cli.py``.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from training import cli

RENAMED = {
    "--ner-config": "--ner-net",
    "--org-convention": "--ner-org-convention",
    "--sentiment-config": "--sentiment-net",
    "--sentiment-linear-config": "--sentiment-linear-features",
    "--fasttext-lr-scale": "--sentiment-fasttext-lr-scale",
}
WRITE_DEV_OPTIONS = {"--data", "--seed", "--split-seed", "--sentiment-hold-out"}


def translate(argv: Sequence[str]) -> list[str]:
    """The ``zhserve-train`` arguments of an old-style command line."""
    task, write_dev, rest = "all", None, []
    items = list(argv)
    while items:
        item = items.pop(0)
        name, eq, value = item.partition("=")
        if name in ("--task", "--write-dev"):
            value = value if eq else items.pop(0)
            task, write_dev = (value, write_dev) if name == "--task" else (task, value)
            continue
        rest.append(RENAMED.get(name, name) + (eq + value if eq else ""))
    if write_dev is None:
        return [task, *rest]
    kept, keep = [], False
    for item in rest:  # write-dev takes only the options that choose the splits
        if item.startswith("--"):
            keep = item.partition("=")[0] in WRITE_DEV_OPTIONS
        if keep:
            kept.append(item)
    return ["write-dev", write_dev, *kept]


def main(argv: Sequence[str] | None = None) -> int:
    return cli.main(translate(sys.argv[1:] if argv is None else argv))


if __name__ == "__main__":
    sys.exit(main())
