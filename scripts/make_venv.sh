#!/usr/bin/env bash
# make_venv.sh VENV "INPUT FILES" PIP-ARGS...: create the virtual environment VENV in the repository root
# and `pip install PIP-ARGS` into it. Idempotent: a second call re-installs only when INPUT FILES changed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
venv="$repo/$1"
inputs="$2"
shift 2
python="${PYTHON:-python3}"
stamp="$venv/.installed"
# shellcheck disable=SC2086
want="$(cat $inputs | sha256sum | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: installing $venv (the first time takes a few minutes)"
"$venv/bin/pip" install --quiet --upgrade "pip>=24"
"$venv/bin/pip" install --quiet "$@"
"$venv/bin/pip" check
echo "$want" > "$stamp"
echo "setup: done"
