#!/usr/bin/env bash
# Re-measures the README's claims with seeds, intervals and paired tests (issue "Numbers you can
# trust"), on the real UTKFace images, split paper/42 (split seed 42), training seeds 42, 43, 44:
#   mobileagenet  MobileAgeNet's 96 px recipe (26 epochs), 3 training seeds
#   ablations     the ablation table (5 epochs, 3,072 images per part), 3 seeds per row
#   resnet18      the best comparison model (ResNet-18 from scratch, 17 epochs), 3 seeds
#   mixture       AgeMoE over those six trials, paired test against its best expert
#   tables        print every table from the database
# Usage: bash experiments/trust.sh [step ...]   (default: every step, in this order)
# ROOT (workspace, default: the current directory), DATA (default ../shared/data/utkface).
# A file named HOLD in this folder pauses the chain between two runs.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
data="${DATA:-$here/../../shared/data/utkface}"
root="${ROOT:-$PWD}"
python="${PYTHON:-$here/../.venv/bin/python}"
common=(--root "$root" --data-dir "$data")
recipe='"lr": 0.001, "batch": 64, "dropout": 0.1, "momentum": 0.9, "pretrained": 0, "head": "regression"'
mobileagenet="{$recipe, \"freeze\": 0, \"backbone_lr_mult\": 1, \"bounded\": 1, \"sgd\": 0, \"smooth_l1\": 0, \"onecycle\": 1}"
hold() { while [ -e "$here/HOLD" ]; do sleep 20; done; }
train() { # model epochs transform prm
    hold
    echo "== $1: $2 epochs, $3, training seeds 42 43 44"
    "$python" -m ab.nn.train "${common[@]}" -c "age-regression_utkface_mae_$1" -e "$2" -t 1 --seeds 3 -f "$3" \
        -w 0 --save_pth_weights --quiet --export none --in-process -p "$4"
}
ids() { # config: the trained trial ids of the default data key
    "$python" - "$1" <<PY
import sys
from ab.nn import api
print(" ".join(f"trial:{i}" for i in api.ranked_trials(config=sys.argv[1], db="$root/db/ab.nn.db").id))
PY
}
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(mobileagenet ablations resnet18 mixture tables)
for step in "${steps[@]}"; do
    case "$step" in
        mobileagenet) train MobileAgeNet 26 norm_96_aug "$mobileagenet" ;;
        ablations) hold; "$python" "$here/ablations.py" run "${common[@]}" --epochs 5 --max-samples 3072 --seeds 3 ;;
        resnet18) train ResNet18 17 norm_96_aug "{$recipe}" ;;
        mixture)
            hold
            "$python" -m ab.nn.moe fit "${common[@]}" --experts $(ids age-regression_utkface_mae_MobileAgeNet) \
                $(ids age-regression_utkface_mae_ResNet18) ;;
        tables)
            "$python" "$here/ablations.py" table "${common[@]}" --epochs 5 --max-samples 3072
            "$python" -m ab.nn.moe show "${common[@]}"
            "$python" -m ab.nn.report "${common[@]}" ;;
        *) echo "unknown step $step" >&2; exit 2 ;;
    esac
done
