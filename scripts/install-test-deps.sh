#!/usr/bin/env bash
# Installs the system programs the tests drive, from Debian/Ubuntu's archive: chromium (driven by
# Playwright through executable_path, so `playwright install` is never needed), CJK and emoji fonts
# so Chinese text and emoji render in screenshots, and prometheus (a real server scrapes the test
# cluster and evaluates the Grafana dashboard's and the alert rules' queries). Idempotent: does
# nothing when all are already installed.
set -euo pipefail

# With arguments it installs those packages instead (`make bench` asks for wrk).
if [ "$#" -gt 0 ]; then
    packages=("$@")
else
    packages=(chromium fonts-noto-cjk fonts-noto-color-emoji prometheus)
fi

missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done

if [ "${#missing[@]}" -eq 0 ]; then
    echo "test dependencies already installed: ${packages[*]}"
    exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        sudo="sudo"
    else
        echo "need root (or sudo) to install: ${missing[*]}" >&2
        exit 1
    fi
fi

export DEBIAN_FRONTEND=noninteractive
# Refresh the package lists only when apt cannot find a candidate for a missing package
# (a fresh container ships without lists).
for package in "${missing[@]}"; do
    if ! apt-cache policy "$package" 2>/dev/null | grep -q "Candidate: [^(]"; then
        $sudo apt-get update
        break
    fi
done

$sudo apt-get install -y --no-install-recommends "${missing[@]}"
echo "installed: ${missing[*]}"
