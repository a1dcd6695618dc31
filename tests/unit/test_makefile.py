"""The Makefile's targets are the commands the README names: every `make X` the README (or a
generated file's banner) mentions exists, and nothing is listed in .PHONY without a recipe."""

from __future__ import annotations

import re
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def makefile_targets() -> tuple[set[str], set[str]]:
    text = (REPO_ROOT / "Makefile").read_text(encoding="utf-8")
    phony = set(re.search(r"^\.PHONY:(.*)$", text, re.MULTILINE).group(1).split())  # type: ignore[union-attr]
    defined = {match for match in re.findall(r"^([A-Za-z][\w-]*):(?!=)", text, re.MULTILINE)}
    return phony, defined


def test_every_phony_target_has_a_rule() -> None:
    phony, defined = makefile_targets()
    assert phony <= defined, f"in .PHONY without a rule: {sorted(phony - defined)}"


def test_every_make_command_the_docs_name_exists() -> None:
    _, defined = makefile_targets()
    named: set[str] = set()
    for path in [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md")), REPO_ROOT / "serve_config.yaml"]:
        named |= set(re.findall(r"`make ([a-z][\w-]*)", path.read_text(encoding="utf-8")))
    assert named, "the README names no make target?"
    assert named <= defined, f"named in the docs but not in the Makefile: {sorted(named - defined)}"
