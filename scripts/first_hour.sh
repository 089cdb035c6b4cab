#!/usr/bin/env bash
# A newcomer's first hour, each step timed: a fresh clone set up, a small sweep, a query, a dashboard
# screenshot, the report, and the age of a face in a photo. It prints each command as a person would type
# it, then a table of the steps and their wall times (docs/guide/quick-start.md shows one run of it).
#
#   bash scripts/first_hour.sh [--work DIR] [--samples N] [--data DIR] [--venv DIR]
#
#   --work     where the clone and its workspace go (default: a new folder under /tmp, kept afterwards)
#   --samples  images per part of the split (default 256); the sweep is 2 trials of 1 epoch
#   --data     the UTKFace images (default: $LEMUR_DATA, else ../shared/data/utkface beside the repository)
#   --venv     use this environment instead of setting one up in the clone (CI, where .venv exists);
#              the clone's own code is still what runs (PYTHONPATH)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
work="" samples=256 venv="" data="${LEMUR_DATA:-$repo/../shared/data/utkface}"
while [ $# -gt 0 ]; do
    case "$1" in
        --work) work="$2"; shift 2 ;;
        --samples) samples="$2"; shift 2 ;;
        --data) data="$2"; shift 2 ;;
        --venv) venv="$(cd "$2" && pwd)"; shift 2 ;;
        -h|--help) sed -n '2,12p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "first_hour.sh: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
[ -d "$data" ] || { echo "first_hour.sh: error: no UTKFace images at $data (--data DIR or LEMUR_DATA)" >&2; exit 2; }
data="$(cd "$data" && pwd)"
work="${work:-$(mktemp -d /tmp/first-hour.XXXXXX)}"
mkdir -p "$work"
clone="$work/ab-nn-age"
config=age-regression_utkface_mae_MobileAgeNet
steps=()

step() { # name command...: print the command, run it in the clone (once there is one), time it
    local name="$1" start; shift
    printf '\n$ %s\n' "$*"
    start=$(date +%s.%N)
    (cd "$( [ -d "$clone" ] && echo "$clone" || echo "$work")" && "$@")
    steps+=("$name|$(python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.0f}')" "$start" "$(date +%s.%N)")")
}

echo "first hour: $(git -C "$repo" rev-parse --short HEAD) on $(nproc) cores, load $(cut -d' ' -f1 /proc/loadavg), $(date -u +%FT%TZ)"
rm -rf "$clone"
step "clone" git clone -q "$repo" "$clone"
if [ -n "$venv" ]; then
    py="$venv/bin/python"
    export PYTHONPATH="$clone"
else
    step "set up .venv (scripts/setup.sh)" bash scripts/setup.sh
    py="$clone/.venv/bin/python"
fi
export LEMUR_DATA="$data"
step "sweep: 2 trials, 1 epoch, $samples images per part" \
    "$py" -m ab.nn.train -c "$config" -e 1 -t 2 --max-samples "$samples" --save-pth-weights --export onnx \
    --latency-runs 5 --quiet
step "query: every trial" "$py" -m ab.nn.stat trials -c "$config"
step "query: ranked, from Python" "$py" -c "from ab.nn import api; print(api.ranked_trials(config='$config')[['id', 'eval_mae', 'test_mae']].to_string(index=False))"
dashboard="$(dirname "$py")/optuna-dashboard"
if [ -x "$dashboard" ] && { command -v chromium >/dev/null || command -v chromium-browser >/dev/null; }; then
    step "dashboard screenshot" env DASHBOARD="$dashboard" bash scripts/dashboard_screenshots.sh db/ab.nn.db "$work/shots" 1
else
    echo; echo "dashboard screenshot: skipped (needs optuna-dashboard, pip install -e '.[dashboard]', and chromium)"
fi
step "report" "$py" -m ab.nn.report
step "face template (once per workspace)" "$py" -m ab.nn.face.template --quiet
photo="$(find "$data" -name '*.jpg' | LC_ALL=C sort | sed -n 1p)"
step "predict: one photo" "$py" -m ab.nn.predict "$photo" --model "best:$config"

printf '\n| step | seconds |\n|---|---|\n'
total=0
for entry in "${steps[@]}"; do
    printf '| %s | %s |\n' "${entry%%|*}" "${entry##*|}"
    total=$((total + ${entry##*|}))
done
printf '| **all** | **%s** |\n' "$total"
echo "workspace: $clone"
