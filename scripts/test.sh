#!/usr/bin/env bash
# Set up .venv (idempotent), build the documentation (strict), and run the whole test suite; arguments go to
# pytest.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The two environments install side by side: each pip keeps about one core or the network busy, and on a
# new machine they are most of CI's set-up (290 s and 359 s one after the other on 7 December 2026).
cd "$repo"
litert_log="$(mktemp)"
bash "$repo/scripts/setup_litert_torch.sh" > "$litert_log" 2>&1 &
litert=$!
trap 'kill "$litert" 2>/dev/null || true; rm -f "$litert_log"' EXIT
bash "$repo/scripts/setup.sh"
if ! wait "$litert"; then
    cat "$litert_log" >&2
    echo "setup: .venv-litert-torch could not be made (its output above)" >&2
    exit 1
fi
cat "$litert_log"
rm -f "$litert_log"
trap - EXIT
# The documentation site first (a few seconds): a broken link or anchor, a page missing from the nav or a
# docstring that mkdocstrings cannot render fails the run before any test starts.
site="$(mktemp -d)"
trap 'rm -rf "$site"' EXIT
# (not --quiet: it hides the warnings that --strict counts)
NO_MKDOCS_2_WARNING=1 "$repo/.venv/bin/mkdocs" build --strict -f "$repo/mkdocs.yml" -d "$site"
rm -rf "$site"
# Two xdist workers, one per core, each training with one torch thread (tests/conftest.py); a third worker
# made the run no shorter (23:07 against 22:22 on 7 December). worksteal: a worker that is done takes
# queued tests from the other, so one long test at the end does not hold the run. `-n 0` after the
# script's arguments runs it in one process.
exec "$repo/.venv/bin/python" -m pytest -n 2 --dist worksteal "$@"
