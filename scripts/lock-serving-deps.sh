#!/usr/bin/env bash
# Rewrites constraints.txt: every package `pip install .` (serving only, no extras) resolves to,
# pinned. Uses pip's dry-run install report, so nothing is installed. Run with the image's Python
# (3.11) on Linux x86_64, then rebuild the image (k8s/Dockerfile installs with -c constraints.txt).
set -euo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-.venv/bin/python}"
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"$python" -m pip install --dry-run --ignore-installed --quiet --report "$report" .
"$python" - "$report" <<'PY'
import json, sys, datetime, platform
report = json.load(open(sys.argv[1]))
pins = sorted((i["metadata"]["name"].lower(), i["metadata"]["version"]) for i in report["install"]
              if i["metadata"]["name"].lower() != "zhserve")
with open("constraints.txt", "w") as out:
    out.write(f"# The serving closure of `pip install .` (no extras), resolved on {datetime.date.today()} for Python "
              f"{platform.python_version_tuple()[0]}.{platform.python_version_tuple()[1]} on {platform.system()}\n"
              "# x86_64: the container image installs with `-c constraints.txt`, so a rebuild gets the same packages.\n"
              "# Regenerate: scripts/lock-serving-deps.sh (a dry-run install report; nothing is installed).\n\n")
    out.writelines(f"{name}=={version}\n" for name, version in pins)
print(f"constraints.txt: {len(pins)} packages")
PY
