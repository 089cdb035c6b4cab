#!/usr/bin/env bash
# Create .venv-litert-torch, the environment of the second TFLite converter (litert-torch, LEMUR's):
# litert-torch requires torch<2.15, the project pins torch 2.15, so the converter runs in its own
# interpreter (ab.nn.deploy.converters finds it here; $LEMUR_LITERT_TORCH_PYTHON names another).
# Idempotent: a second call only re-installs when the lock file changed.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
python="${PYTHON:-python3}"
venv="$repo/.venv-litert-torch"
stamp="$venv/.installed"
want="$(sha256sum requirements/litert-torch.txt | cut -d' ' -f1)"

if [ ! -x "$venv/bin/python" ]; then
    echo "setup: creating $venv"
    "$python" -m venv "$venv"
fi
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "setup: installing litert-torch and its torch (a few minutes the first time)"
"$venv/bin/pip" install --quiet --upgrade "pip>=24"
"$venv/bin/pip" install --quiet -r requirements/litert-torch.txt
"$venv/bin/pip" check
echo "$want" > "$stamp"
echo "setup: done"
