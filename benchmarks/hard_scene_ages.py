"""Age on hard scenes: is a face aged the same through the photo path when its crop is pasted with a
feathered edge or as a cut-out, so that the aligned crop's corners show the scene instead of
UTKFace's own background, and when the scene is skin-like texture or a mosaic of face tiles?

The face scenes of ``photo_hard_scenes.py`` (test-split crops on the ``plain``, ``skin``, ``blobs``
and ``mosaic`` backgrounds, each with a ``hard``, ``soft`` and ``cutout`` edge; ``--faces`` per
background, edge and seed) go through ``AgeEstimator.predict`` (detection, the face check,
alignment, the age model); the face the photo path reports on the pasted crop (``found``, its best
score if several) is paired with the same model's age of the original crop
(``AgeEstimator.ages([crop])``). Faces not found are counted and left out. Per edge, over the
textured backgrounds and on the plain one, and per edge and background: n, the mean shift
scene - crop, MAE on the scene and on the crop against the true age, and the paired MAE difference.
Intervals: 95 % percentile bootstrap over faces (``ab.nn.stat.uncertainty``); with several
``--model`` replicas (training seeds of one recipe) it resamples the replicas too.

    python benchmarks/hard_scene_ages.py --model trial:1 --root <workspace> \\
        --data-dir ../shared/data/utkface --faces 100 --seeds 5 6 7   # the experiments page; 793 s on 2 vCPU
    python benchmarks/hard_scene_ages.py --model trial:1 trial:2 trial:3 ...  # training-seed replicas
    python benchmarks/hard_scene_ages.py --model trial:10 trial:11 trial:12 ... --against plain.json
        # one recipe against another's run on the same scenes, paired over faces
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

from face_alignment import test_crops
from photo_hard_scenes import found, scene_count, scenes

BAR = 0.5
"""Years: the largest scene - crop shift the issue accepts."""


def measure(estimators, crops, face_scenes) -> list[dict]:
    """One row per face scene (``scenes``' dicts): seed, kind, edge, the crop's index, whether the
    photo path found the pasted face and, if so, per replica its age on the scene and on the
    original crop. The first estimator runs the photo path; the others (replicas) age the crop it
    aligned."""
    first, others = estimators[0], estimators[1:]
    rows = []
    for scene in face_scenes:
        hits = [face for face in first.predict(scene["image"]) if found(face.box, scene)]
        row = {key: scene[key] for key in ("seed", "kind", "edge", "crop")}
        row["found"] = bool(hits)
        if hits:
            face, crop = hits[0], crops[scene["crop"]]
            row["scene_ages"] = [face.age] + [float(e.ages([face.crop])[0]) for e in others]
            row["crop_ages"] = [float(e.ages([crop])[0]) for e in estimators]
        rows.append(row)
    return rows


def paired(rows, truth) -> dict:
    """The numbers of a group of rows (faces not found left out): scenes, n (faces found), the mean
    shift scene - crop, MAE on the scene and on the crop, and the MAE difference scene - crop, each
    mean with its interval. Every replica's age is paired with the same replica's age of the same
    face; the bootstrap draws faces and replicas (``bootstrap_replicas``: the interval of a mean over
    (replicas, faces), of signed values as much as of absolute errors)."""
    from ab.nn.stat.uncertainty import bootstrap_replicas

    hits = [r for r in rows if r["found"]]
    out = {"scenes": len(rows), "n": len(hits)}
    if not hits:
        return out
    scene = np.array([r["scene_ages"] for r in hits]).T  # (replicas, faces)
    crop = np.array([r["crop_ages"] for r in hits]).T
    ages = np.array([truth[r["crop"]] for r in hits], dtype=np.float64)
    measures = {"shift": scene - crop, "mae_scene": np.abs(scene - ages), "mae_crop": np.abs(crop - ages),
                "mae_difference": np.abs(scene - ages) - np.abs(crop - ages)}
    for name, values in measures.items():
        out[name] = [float(values.mean()), *bootstrap_replicas(values)]
    return out


def groups(rows) -> dict[str, list[dict]]:
    """Rows by edge over the textured backgrounds, by edge on the plain one, and by edge and background."""
    from ab.nn.face.scenes import EDGES, FACELESS

    out = {f"{edge}, textured": [r for r in rows if r["edge"] == edge and r["kind"] != "plain"] for edge in EDGES}
    out |= {f"{edge}, {kind}": [r for r in rows if r["edge"] == edge and r["kind"] == kind]
            for edge in EDGES for kind in FACELESS}
    return out


def _cell(value) -> str:
    mean, low, high = value
    return f"{mean:+.2f} [{low:+.2f}, {high:+.2f}]"


def table(numbers: dict) -> list[str]:
    lines = ["| edge, background | faces found | shift scene - crop (years) | MAE scene | MAE crop | "
             "MAE scene - crop |", "|---|---|---|---|---|---|"]
    for label, g in numbers.items():
        if not g["n"]:
            lines.append(f"| {label} | 0 of {g['scenes']} | - | - | - | - |")
            continue
        lines.append(f"| {label} | {g['n']} of {g['scenes']} | {_cell(g['shift'])} | {g['mae_scene'][0]:.2f} | "
                     f"{g['mae_crop'][0]:.2f} | {_cell(g['mae_difference'])} |")
    return lines


def verdict(numbers: dict, edge: str = "soft") -> str:
    """Is the ``edge`` shift over the textured backgrounds within +-``BAR`` years, interval and all?"""
    g = numbers[f"{edge}, textured"]
    if not g["n"]:
        return f"{edge}: no face found"
    low, high = g["shift"][1:]
    if -BAR <= low and high <= BAR:
        return f"{edge} shift {_cell(g['shift'])}: within {BAR} years, interval and all"
    if low > BAR or high < -BAR:
        return f"{edge} shift {_cell(g['shift'])}: beyond {BAR} years, interval and all"
    return f"{edge} shift {_cell(g['shift'])}: not shown within {BAR} years (the interval reaches beyond it)"


def against(rows, other_rows, truth) -> list[str]:
    """This run minus another run's recipe (``--against``, its ``--out`` file) on the same scenes: per group
    of ``groups``, over the faces both found, the paired difference of the mean shift and of the scene
    MAE (images drawn for both sides, each side's replicas drawn on its own)."""
    from ab.nn.stat.uncertainty import compare

    def key(row):
        return row["seed"], row["kind"], row["edge"], row["crop"]

    if [key(r) for r in rows] != [key(r) for r in other_rows]:
        raise ValueError("--against: the other run's scenes are not this run's (give both the same --seeds, "
                         "--faces and --crops)")
    lines = ["| edge, background | faces | shift, this run | shift, other | shift difference | "
             "scene MAE difference |", "|---|---|---|---|---|---|"]
    mine, theirs = groups(rows), groups(other_rows)
    for label in mine:
        both = [(a, b) for a, b in zip(mine[label], theirs[label]) if a["found"] and b["found"]]
        if not both:
            lines.append(f"| {label} | 0 | - | - | - | - |")
            continue
        ages = np.array([truth[a["crop"]] for a, _ in both], dtype=np.float64)

        def arrays(side):
            scene = np.array([pair[side]["scene_ages"] for pair in both]).T
            return scene - np.array([pair[side]["crop_ages"] for pair in both]).T, np.abs(scene - ages)

        (shift_a, mae_a), (shift_b, mae_b) = arrays(0), arrays(1)
        shift, mae = compare(shift_a, shift_b), compare(mae_a, mae_b)
        lines.append(f"| {label} | {len(both)} | {shift.mae_a:+.2f} | {shift.mae_b:+.2f} | "
                     f"{_cell((shift.difference, shift.low, shift.high))} | {_cell((mae.difference, mae.low, mae.high))} |")
    return lines


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset import utkface
    from ab.nn.dataset.sources import open_image
    from ab.nn.predict import AgeEstimator

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", nargs="+", required=True,
                   help="the age model; more than one: training-seed replicas of one recipe (trial:1 trial:2 ...)")
    p.add_argument("--runtime", default=None, choices=("torch", "onnx", "tflite"))
    p.add_argument("--faces", type=int, default=40, help="face scenes per background, edge and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--crops", type=int, default=1500, help="test-split crops sampled (faces and mosaic tiles)")
    p.add_argument("--out", default=None, help="write the numbers and every scene's ages as JSON here")
    p.add_argument("--against", default=None,
                   help="another run's --out file on the same scenes: print this run minus that one, paired")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    if args.faces < 1:
        p.error("--faces must be at least 1")
    if args.crops < 65:
        p.error("--crops must be at least 65 (64 are mosaic tiles only)")
    ws = workspace.from_arguments(args)
    try:
        other = json.loads(Path(args.against).read_text()) if args.against else None
        if other is not None and (other.get("seeds") != args.seeds
                                  or len(other.get("rows", ())) != scene_count(args.seeds, 0, args.faces)):
            raise ValueError(f"--against {args.against}: another run's scenes (give both the same --seeds, --faces "
                             f"and --crops)")
        estimators = [AgeEstimator.from_model(m, runtime=args.runtime, threads=1, root=ws) for m in args.model]
        entries, truth, blobs, test_size = test_crops(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME),
                                                      args.crops, min(args.seeds))
    except (LookupError, ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    crops = [open_image(blob) for _, blob in blobs]
    start = time.perf_counter()
    face_scenes = tqdm(scenes(crops, args.seeds, 0, args.faces), desc="scenes", unit="img",
                       total=scene_count(args.seeds, 0, args.faces))
    rows = measure(estimators, crops, face_scenes)
    seconds = time.perf_counter() - start
    numbers = {label: paired(g, truth) for label, g in groups(rows).items()}
    print(f"{len(rows)} face scenes ({seconds:.0f} s), seeds {args.seeds}; {len(crops)} of the {test_size} "
          f"test-split crops; model {', '.join(args.model)} ({estimators[0].info.provenance.get('config')}, "
          f"{estimators[0].runtime_name}); detector "
          f"{estimators[0].aligner.detector.name}")
    print("\n".join(table(numbers)))
    print("\n".join(verdict(numbers, edge) for edge in ("soft", "cutout")))
    if args.out:
        Path(args.out).write_text(json.dumps({"models": args.model, "seeds": args.seeds, "numbers": numbers,
                                              "rows": rows}, indent=1))
    if other is not None:
        print(f"\nThis run ({', '.join(args.model)}) minus {', '.join(other['models'])}, paired over the same faces:")
        print("\n".join(against(rows, other["rows"], truth)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
