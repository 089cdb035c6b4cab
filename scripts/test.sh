#!/usr/bin/env bash
# Set up .venv (idempotent), build the documentation (strict), and run the whole test suite; arguments go to
# pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/scripts/setup.sh"
bash "$repo/scripts/setup_litert_torch.sh"
cd "$repo"
# The documentation site first (a few seconds): a broken link or anchor, a page missing from the nav or a
# docstring that mkdocstrings cannot render fails the run before any test starts.
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
# (not --quiet: it hides the warnings that --strict counts)
NO_MKDOCS_2_WARNING=1 "$repo/.venv/bin/mkdocs" build --strict -f "$repo/mkdocs.yml" -d "$site"
rm -rf "$site"
# Two xdist workers: run one at a time, the suite keeps one of two cores busy on average (it waits on
# trial processes and converters). `-n 0` after the script's arguments runs it in one process.
exec "$repo/.venv/bin/python" -m pytest -n 2 "$@"
