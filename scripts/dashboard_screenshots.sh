#!/usr/bin/env bash
# Screenshots of optuna-dashboard on a statistics database, as a person sees it in a browser:
# the study page (MAE metric name, history, learning curves, PRUNED/FAIL timeline) and each trial given (learning curve, user attributes
# with our trial id and MAE in years, state and failure reason).
#   bash scripts/dashboard_screenshots.sh DB_FILE OUT_DIR STUDY_ID TRIAL_NUMBER...
# Needs optuna-dashboard (pip install -e ".[dashboard]") and Debian's chromium.
set -euo pipefail
db="$(cd "$(dirname "$1")" && pwd)/$(basename "$1")"; out="$2"; study="$3"; shift 3
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
shot "http://127.0.0.1:$port/dashboard/studies/$study" "$out/dashboard_study.png" 2200
for number in "$@"; do
    shot "http://127.0.0.1:$port/dashboard/studies/$study/trials?numbers=$number" "$out/dashboard_trial_$number.png"
done
