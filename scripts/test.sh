#!/usr/bin/env bash
# Set up .venv (idempotent) and run the whole test suite; arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
bash "$repo/scripts/setup_litert_torch.sh"
cd "$repo"
# Two xdist workers: run one at a time, the suite keeps one of two cores busy on average (it waits on
# trial processes and converters). `-n 0` after the script's arguments runs it in one process.
exec "$repo/.venv/bin/python" -m pytest -n 2 "$@"
