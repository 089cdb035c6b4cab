#!/usr/bin/env bash
# Set up .venv (idempotent) and run the sweep. Without arguments: the main job, three trials of
# MobileAgeNet on UTKFace; any arguments are passed to `python -m ab.nn.train` instead.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
if [ $# -eq 0 ]; then
    set -- -c age-regression_utkface_mae_MobileAgeNet -e 2 -t 3 --pretrained 0
fi
exec "$repo/.venv/bin/python" -m ab.nn.train "$@"
