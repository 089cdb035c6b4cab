#!/usr/bin/env bash
# Set up .venv (idempotent) and run the whole test suite; arguments go to pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
bash "$repo/scripts/setup_litert_torch.sh"
cd "$repo"
exec "$repo/.venv/bin/python" -m pytest "$@"
