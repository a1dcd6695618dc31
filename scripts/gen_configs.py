"""Write every serve config from one source: ``configs/app.yaml`` plus one small overlay per target.

    python -m scripts.gen_configs            # what `make configs` runs: rewrite the generated copies
    python -m scripts.gen_configs --check    # exit 1 and name the copies that differ (CI, the unit test)

Targets (``TARGETS``): ``serve_config.yaml`` (one box), ``serve_config.cluster.yaml`` (a multi-node
Ray cluster), ``serve_config.base.yaml`` (the production-size ModelScope models) and the
``serveConfigV2`` block of ``k8s/rayservice.yaml``.

An overlay is a serve config that names only what differs: mappings merge key by key, and list
items (``applications``, ``deployments``) merge by their ``name``. Comments travel with keys: a key
the overlay sets keeps the comments the overlay gives it (above it and at the end of its line) and
loses the source's, which explained the source's value; every other key keeps the source's comments.
An overlay's first comment block (up to the first blank line) heads the generated file.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
SOURCE = Path("configs/app.yaml")
RAYSERVICE = Path("k8s/rayservice.yaml")
# output → overlay; the RayService's output is the serveConfigV2 block inside the manifest.
TARGETS: dict[Path, Path] = {
    Path("serve_config.yaml"): Path("configs/overlays/local.yaml"),
    Path("serve_config.cluster.yaml"): Path("configs/overlays/cluster.yaml"),
    Path("serve_config.base.yaml"): Path("configs/overlays/base.yaml"),
    RAYSERVICE: Path("configs/overlays/rayservice.yaml"),
}
SERVE_CONFIG_KEY = "  serveConfigV2: |\n"
SERVE_CONFIG_INDENT = "    "

KeyPath = tuple[str, ...]


@dataclass
class Comments:
    """The comment lines above a key and the comment at the end of its line (with its column)."""

    above: list[str] = field(default_factory=list)
    end_of_line: str | None = None
    column: int = 0


@dataclass
class Annotated:
    """A YAML document's data, its comments by key path, and its heading comment block."""

    data: dict[str, Any]
    comments: dict[KeyPath, Comments]
    header: list[str]


def _split_comment(line: str) -> tuple[str, str | None, int]:
    """``line`` without its end-of-line comment, the comment, and the comment's column."""
    quote: str | None = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index:].rstrip(), index
    return line.rstrip(), None, 0


_KEY = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[A-Za-z_][\w.-]*):(?: +(?P<value>.*))?$")


def parse(text: str) -> Annotated:
    """Read the data with PyYAML and the comments with a line scanner over the block-style subset
    the serve configs use (mappings; lists of mappings that begin with ``name:``)."""
    comments: dict[KeyPath, Comments] = {}
    header: list[str] = []
    pending: list[str] = []
    seen_key = False
    stack: list[tuple[int, KeyPath]] = [(0, ())]  # (indent of a mapping's keys or a list's dashes, path)
    last_key: KeyPath = ()
    for raw in text.splitlines():
        body, comment, column = _split_comment(raw)
        if not body.strip():
            if comment is not None:
                pending.append(comment)
            elif pending and not seen_key:
                header, pending = header + pending, []
            continue
        match = _KEY.match(body)
        if match is None:
            raise ValueError(f"cannot place comments around {raw!r}: only block mappings and named list items")
        indent, key = len(match["indent"]), match["key"]
        if match["dash"]:
            while stack[-1][0] > indent:
                stack.pop()
            if stack[-1][0] < indent:
                stack.append((indent, last_key))
            item: KeyPath = (*stack[-1][1], str(yaml.safe_load(match["value"] or "")))
            if pending:
                comments[item] = Comments(above=pending)
            pending = []
            indent += 2
            stack.append((indent, item))
        while stack[-1][0] > indent:
            stack.pop()
        if stack[-1][0] < indent:
            stack.append((indent, last_key))
        path = (*stack[-1][1], key)
        if pending or comment is not None:
            comments[path] = Comments(above=pending, end_of_line=comment, column=column)
        pending, seen_key, last_key = [], True, path
    return Annotated(yaml.safe_load(text) or {}, comments, header)


def _merge(source: Any, overlay: Any, path: KeyPath, touched: set[KeyPath]) -> Any:
    """``overlay`` merged onto ``source``; ``touched`` collects the key paths the overlay sets."""
    if isinstance(source, dict) and isinstance(overlay, dict):
        # A key new to the source goes where the overlay puts it: before the next key both share.
        order = [key for key in source]
        new: list[str] = []
        for key in overlay:
            if key in source:
                order[order.index(key) : order.index(key)] = new
                new = []
            else:
                new.append(key)
        order += new
        merged = {}
        for key in order:
            if key in overlay:
                touched.add((*path, key))
                merged[key] = _merge(source.get(key), overlay[key], (*path, key), touched)
            else:
                merged[key] = source[key]
        return merged
    if isinstance(source, list) and isinstance(overlay, list) and all(isinstance(i, dict) for i in source + overlay):
        by_name = {item["name"]: index for index, item in enumerate(source)}
        result = list(source)
        for item in overlay:
            item_path = (*path, str(item["name"]))
            touched.add(item_path)
            if item["name"] in by_name:
                result[by_name[item["name"]]] = _merge(source[by_name[item["name"]]], item, item_path, touched)
            else:
                result.append(item)
        return result
    return copy.deepcopy(overlay)


def _scalar(value: Any) -> str:
    if not isinstance(value, str):  # numbers, booleans, null as YAML writes them (1e-05 → 1.0e-05)
        return str(yaml.safe_dump(value, default_flow_style=True).splitlines()[0])
    text = value
    plain = re.fullmatch(r"[\w./:@+-]+", text) is not None and not text.startswith(("-", ":", "@"))
    return text if plain and yaml.safe_load(text) == text else json.dumps(text, ensure_ascii=False)


def _line(indent: int, body: str, note: Comments | None) -> list[str]:
    lines = [" " * indent + comment for comment in (note.above if note else [])]
    text = " " * indent + body
    if note and note.end_of_line:
        text = text.ljust(note.column - 1) + " " + note.end_of_line
    return [*lines, text]


def _emit(node: Any, path: KeyPath, indent: int, notes: dict[KeyPath, Comments], out: list[str]) -> None:
    for key, value in node.items():
        key_path = (*path, key)
        if indent == 0 and out:
            out.append("")
        if isinstance(value, dict) and value:
            out += _line(indent, f"{key}:", notes.get(key_path))
            _emit(value, key_path, indent + 2, notes, out)
        elif isinstance(value, list) and value and all(isinstance(item, dict) for item in value):
            out += _line(indent, f"{key}:", notes.get(key_path))
            for item in value:
                item_path = (*key_path, str(item["name"]))
                item_note = notes.get(item_path)
                out += [" " * (indent + 2) + comment for comment in (item_note.above if item_note else [])]
                first: list[str] = []
                _emit({"name": item["name"]}, item_path, indent + 4, notes, first)
                first[-1] = " " * (indent + 2) + "- " + first[-1][indent + 4 :]
                out += first
                _emit({k: v for k, v in item.items() if k != "name"}, item_path, indent + 4, notes, out)
        elif isinstance(value, list):
            out += _line(indent, f"{key}: [{', '.join(_scalar(item) for item in value)}]", notes.get(key_path))
        elif isinstance(value, dict):
            out += _line(indent, f"{key}: {{}}", notes.get(key_path))
        else:
            out += _line(indent, f"{key}: {_scalar(value)}", notes.get(key_path))


def merge(source: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` merged onto ``source``: mappings by key, lists of named items by ``name``."""
    return dict(_merge(source, overlay, (), set()))


def render(source: Annotated, overlay: Annotated, banner: str) -> str:
    """The generated config's text: ``banner``, the overlay's heading, then the merged config."""
    touched: set[KeyPath] = set()
    data = _merge(source.data, overlay.data, (), touched)
    notes = {path: note for path, note in source.comments.items() if path not in touched}
    for path in touched:
        if path in overlay.comments:
            notes[path] = overlay.comments[path]
        elif isinstance(_lookup(data, path), dict | list) and path in source.comments:
            notes[path] = source.comments[path]  # a mapping the overlay only merges into keeps its comments
    out: list[str] = []
    _emit(data, (), 0, notes, out)
    return "\n".join([*banner.splitlines(), *overlay.header, "", *out]) + "\n"


def _lookup(data: Any, path: KeyPath) -> Any:
    for key in path:
        if isinstance(data, list):
            data = next(item for item in data if str(item.get("name")) == key)
        else:
            data = data[key]
    return data


def _embed(manifest: str, config: str) -> str:
    """``manifest`` with its serveConfigV2 block scalar replaced by ``config``."""
    start = manifest.index(SERVE_CONFIG_KEY) + len(SERVE_CONFIG_KEY)
    end = start
    lines = manifest[start:].splitlines(keepends=True)
    for line in lines:
        if line.strip() and not line.startswith(SERVE_CONFIG_INDENT):
            break
        end += len(line)
    block = "".join(SERVE_CONFIG_INDENT + line if line.strip() else "\n" for line in config.splitlines(True))
    return manifest[:start] + block + manifest[end:]


def generate(root: Path = REPO_ROOT) -> dict[Path, str]:
    """Every generated file's expected full text, by path relative to ``root``."""
    source = parse((root / SOURCE).read_text(encoding="utf-8"))
    outputs: dict[Path, str] = {}
    for target, overlay_path in TARGETS.items():
        banner = (
            f"# GENERATED by `make configs` from {SOURCE} + {overlay_path}; do not edit here:\n"
            f"# edit those files and run `make configs` (tests/unit/test_configs.py checks this copy)."
        )
        config = render(source, parse((root / overlay_path).read_text(encoding="utf-8")), banner)
        if target == RAYSERVICE:
            outputs[target] = _embed((root / target).read_text(encoding="utf-8"), config)
        else:
            outputs[target] = config
    return outputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scripts.gen_configs", description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a copy is out of date")
    args = parser.parse_args(argv)
    stale = []
    for path, text in generate().items():
        if (REPO_ROOT / path).read_text(encoding="utf-8") != text:
            stale.append(path)
            if not args.check:
                (REPO_ROOT / path).write_text(text, encoding="utf-8")
    for path in stale:
        print(f"{'out of date' if args.check else 'wrote'}: {path}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
