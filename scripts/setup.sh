#!/usr/bin/env bash
# Create .venv in the repository root and install the project with the locked versions.
# Idempotent: a second call only re-installs when setup.cfg or the lock file changed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
venv="$repo/.venv"
stamp="$venv/.installed"
want="$(cat setup.cfg pyproject.toml requirements/constraints.txt | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: installing dependencies (first run takes a few minutes)"
# torch from the package registry is a CUDA build that also runs on the CPU; the lock file pins
# the torch/torchvision pair so that pip never mixes builds.
"$venv/bin/pip" install --quiet --upgrade "pip>=24"
"$venv/bin/pip" install --quiet -c requirements/constraints.txt -e ".[dev]"
"$venv/bin/pip" check
echo "$want" > "$stamp"
echo "setup: done"
