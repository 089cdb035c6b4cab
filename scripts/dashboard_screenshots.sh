#!/usr/bin/env bash
# Screenshots of optuna-dashboard on a statistics database, as a person sees it in a browser:
# the study page (MAE metric name, history, learning curves, PRUNED/FAIL timeline) and each trial given (learning curve, user attributes
# with our trial id and MAE in years, state and failure reason).
#   bash scripts/dashboard_screenshots.sh DB_FILE OUT_DIR TRIAL_ID...
# TRIAL_IDs are ours (the ids the summary and the API show); the dashboard's own URLs take its study id and
# Optuna's per-study number, which are looked up in the trial table. The study is that of the first trial.
# Needs optuna-dashboard (pip install -e ".[dashboard]") and Debian's chromium.
set -euo pipefail
db="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; out="$2"; shift 2
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dashboard="${DASHBOARD:-$repo/.venv/bin/optuna-dashboard}"
browser="${CHROMIUM:-$(command -v chromium || command -v chromium-browser)}"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
mkdir -p "$out"
"$dashboard" "sqlite:///$db" --host 127.0.0.1 --port "$port" >/dev/null 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 60); do curl -sf "http://127.0.0.1:$port/api/studies" >/dev/null && break; sleep 0.5; done
shot() { # url file [height]
    "$browser" --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
        --disable-component-update --disable-sync --user-data-dir="$(mktemp -d)" --hide-scrollbars \
        --window-size=1500,"${3:-1700}" --virtual-time-budget=15000 --screenshot="$2" "$1" >/dev/null 2>&1
    echo "$2"
}
optuna_ids() { # trial id -> "study_id number" as the dashboard knows them
    python3 - "$db" "$1" <<'PY'
import sqlite3, sys
row = sqlite3.connect(sys.argv[1]).execute(
    "SELECT s.study_id, t.number FROM trial t JOIN studies s ON s.study_name = t.study WHERE t.id = ?",
    (int(sys.argv[2]),)).fetchone()
sys.exit(f"trial {sys.argv[2]} is not in {sys.argv[1]}, or has no Optuna trial") if row is None else print(*row)
PY
}
ids="$(optuna_ids "$1")"; read -r study _ <<<"$ids"
shot "http://127.0.0.1:$port/dashboard/studies/$study" "$out/dashboard_study.png" 2200
for trial in "$@"; do
    ids="$(optuna_ids "$trial")"; read -r study number <<<"$ids"
    shot "http://127.0.0.1:$port/dashboard/studies/$study/trials?numbers=$number" "$out/dashboard_trial_$trial.png"
done
