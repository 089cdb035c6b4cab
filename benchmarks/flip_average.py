"""Does averaging a trained model's age over the face and its mirror image lower test MAE, and by how much?

A lever that costs no training time (the 60-minute target of the MobileAgeNet section) but doubles
inference cost: each recorded trial's checkpoint is evaluated again on the test images it was judged on,
once plain and once as the mean of ``model(x)`` and ``model(flip(x))``. The pass the trial was trained
with must give its recorded test MAE (it proves the same model and the same images). Reported per trial and,
over several trials (training-seed replicas), together: the paired difference flip minus plain on the
same images with its 95 % bootstrap interval (images and replicas resampled; ``ab.nn.stat.uncertainty``)
and Wilcoxon's p; an interval containing 0 is a tie.

    python benchmarks/flip_average.py --trial 1 --root /path/to/workspace --data-dir ../shared/data/utkface
    python benchmarks/flip_average.py --trial 3 4 5 ...         # replicas of one recipe, judged together

A trial of MobileAgeNet trained with ``flip_average`` 1 averages by itself (its recorded MAE is the
averaged one): its plain pass turns the switch off.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

RECORDED_TOLERANCE = 1e-3
"""Years: how far the pass the trial was trained with may be from its recorded test MAE (float
summation order only)."""


def trained_averaging(trial) -> bool:
    """Whether the trial's model averages over the mirror by itself (MobileAgeNet's ``flip_average``):
    its recorded MAE is then the averaged one, and the plain pass turns the switch off."""
    return float(trial["prm"].get("flip_average", 0)) >= 0.5


class FlipAveraged(nn.Module):
    """Mean age of the image and its left-right mirror (the training augmentation flips too)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        return (self.model(x) + self.model(torch.flip(x, dims=(-1,)))) / 2


def abs_errors(model: nn.Module, dataset, batch: int, desc: str) -> np.ndarray:
    """Per-image absolute errors in the dataset's order, through the runner's own evaluation."""
    from ab.nn import registry
    from ab.nn.sweep.evaluate import evaluate

    loader = DataLoader(dataset, batch_size=batch, shuffle=False, num_workers=0,
                        collate_fn=getattr(dataset, "collate_fn", None))
    metrics = {"mae": registry.load(registry.METRIC, "mae").create_metric((1,))}
    result = evaluate(model, loader, metrics, (1,), torch.device("cpu"), desc, progress=True)
    return np.abs(result.predicted.astype(np.float64) - result.labels.astype(np.float64))


def two_passes(model: nn.Module, averages: bool, dataset, batch: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-image absolute errors plain and flip-averaged. A model that ``averages`` by itself (its
    ``flip_average`` switch) is run with the switch off, then on again; any other is wrapped."""
    if averages:
        model.flip_average = False
    try:
        plain = abs_errors(model, dataset, batch, f"{name} plain")
    finally:
        if averages:
            model.flip_average = True
    return plain, abs_errors(model if averages else FlipAveraged(model), dataset, batch, f"{name} flip-averaged")


def main(argv=None) -> int:
    from ab.nn import api, workspace
    from ab.nn.stat import uncertainty
    from ab.nn.dataset import trial_data
    from ab.nn.util.markdown import table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trial", type=int, nargs="+", required=True, help="trial ids (trained with --save_pth_weights)")
    p.add_argument("--batch", type=int, default=128)
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)

    plain, flipped, rows, keys = [], [], [], set()
    for trial_id in args.trial:
        try:
            trial = api.trial(trial_id, db=ws.db_url)
            model = api.load_model(trial_id, db=ws.db_url, root=ws.root)
        except LookupError as error:
            p.exit(2, f"{error}\n")
        keys.add(trial["data_key"])
        if len(keys) > 1:
            p.exit(2, f"the trials were judged on different data ({', '.join(sorted(keys))}); pass replicas of "
                      f"one data key\n")
        with workspace.active.use(ws):
            data = trial_data.load_judged(trial, ws, trial["transform"], progress=True)
        if data.test is None:
            p.exit(2, f"trial {trial_id} has no test images to judge on\n")
        averages = trained_averaging(trial)
        a, b = two_passes(model, averages, data.test, args.batch, f"trial {trial_id}")
        recorded, as_recorded = float(trial["test_mae"]), (b if averages else a).mean()
        if abs(as_recorded - recorded) > RECORDED_TOLERANCE:
            p.exit(3, f"trial {trial_id}: the {'flip-averaged' if averages else 'plain'} pass (as it was trained) "
                      f"gives test MAE {as_recorded:.4f}, the trial recorded {recorded:.4f}: not the model or not "
                      f"the images it was judged on\n")
        one = uncertainty.compare(b, a)
        rows.append([trial_id, int(trial["seed"]) if trial.get("seed") is not None else "-", int(averages), len(a),
                     f"{a.mean():.3f}", f"{b.mean():.3f}",
                     f"{one.difference:+.3f} [{one.low:+.3f}, {one.high:+.3f}]", f"{one.p_value:.2g}", one.verdict])
        plain.append(a)
        flipped.append(b)
    if len(plain) > 1:
        both = uncertainty.compare(np.stack(flipped), np.stack(plain))
        rows.append([f"{len(plain)} trials", "-", "-", both.n_images, f"{both.mae_b:.3f}", f"{both.mae_a:.3f}",
                     f"{both.difference:+.3f} [{both.low:+.3f}, {both.high:+.3f}]", f"{both.p_value:.2g}",
                     both.verdict])
    print(f"data key {keys.pop()}; flip-averaged minus plain on the same test images (negative: the "
          f"average is better; 'A lower' = flip-averaged lower)")
    print(table(pd.DataFrame(rows, columns=["trial", "training seed", "trained with flip_average", "test images",
                                            "plain test MAE",
                                            "flip-averaged", "difference [95 % CI]", "Wilcoxon p", "verdict"])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
