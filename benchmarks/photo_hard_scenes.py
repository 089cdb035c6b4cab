"""Where the photo path fails: false faces on faceless scenes with face-like texture, and detection
of faces pasted onto such textures with a hard edge, a feathered edge or as an elliptical cut-out
(``ab.nn.face.scenes``), for BlazeFace alone (at its 0.5 threshold and at higher ones) and with the
face-mesh check (``ab.nn.face.verify``), the photo path's default.

Faceless scenes: ``--faceless`` per kind and seed (``plain``: the generated background the other
photo benchmarks use; ``skin``, ``blobs``, ``mosaic``: tiles of test-split crops, shuffled).
Face scenes: ``--faces`` per background kind (the four above), edge and seed, each a different
test-split crop (side 15-60 % of the width, rotation within +-20 degrees). A face counts as found when a reported
box's centre lies on the pasted face and its size fits the crop's (``found``); every other box is a
false face. Intervals: Clopper-Pearson 95 % for the share of photos (that drew a false face; whose face
was found), exact Poisson 95 % for false faces per photo. BlazeFace runs once per scene; the check
filters its detections exactly as ``FaceDetector(check=...)`` does.

    python benchmarks/photo_hard_scenes.py --data-dir ../shared/data/utkface --root <workspace> \\
        --faceless 300 --faces 30 --seeds 3 4     # the experiments page's tables; 109 s on 2 vCPU
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

THRESHOLDS = (0.5, 0.75, 0.9, 0.95)
PRESENCES = (0.5, 0.9, 0.99, 0.999)
DISAGREEMENTS = (0.2, 0.25, 0.3, 0.4)


def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    from scipy.stats import beta

    a = (1 - level) / 2
    low = 0.0 if k == 0 else float(beta.ppf(a, k, n - k + 1))
    high = 1.0 if k == n else float(beta.ppf(1 - a, k + 1, n - k))
    return low, high


def poisson_rate(count: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Garwood) interval of a Poisson mean per photo from ``count`` events in ``n`` photos."""
    from scipy.stats import chi2

    a = (1 - level) / 2
    low = 0.0 if count == 0 else float(chi2.ppf(a, 2 * count) / 2)
    return low / n, float(chi2.ppf(1 - a, 2 * count + 2) / 2) / n


def share(k: int, n: int) -> str:
    low, high = clopper_pearson(k, n)
    return f"{k}/{n} = {k / n:.1%} [{low:.1%}, {high:.1%}]"


def rate(count: int, n: int) -> str:
    low, high = poisson_rate(count, n)
    return f"{count / n:.3f} [{low:.3f}, {high:.3f}]"


def found(box, row) -> bool:
    """Is ``box`` the pasted face: its centre, carried back into the 200x200 crop, within the
    crop's central 140x140 (the face's centre in UTKFace's geometry is near (97, 100)), and its width
    0.3-1.5 times the pasted crop's side. (An overlap rule against the pasted square misses the
    tight boxes of cut-out faces.)"""
    from ab.nn.face import align

    centre = align.apply(align.invert(np.asarray(row["matrix"])), [[(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]])
    centre = centre[0]
    return bool(np.all(np.abs(centre - 100) < 70) and 0.3 <= (box[2] - box[0]) / row["side"] <= 1.5)


def _record(image, faces, check) -> list[dict]:
    out = []
    for f in faces:
        presence, disagreement = check.examine(image, f)
        out.append({"box": [float(v) for v in f.box], "landmarks": np.round(f.landmarks, 2).tolist(),
                    "score": f.score, "presence": presence, "disagreement": disagreement})
    return out


def scene_count(seeds, faceless_n: int, faces_n: int) -> int:
    from ab.nn.face.scenes import EDGES, FACELESS

    return len(seeds) * len(FACELESS) * (faceless_n + len(EDGES) * faces_n)


def scenes(crops, seeds, faceless_n: int, faces_n: int, mosaic_pieces: int = 16):
    """Every scene, in a fixed order drawn from the seeds: per seed, ``faceless_n`` faceless photos of
    each kind, then ``faces_n`` face scenes per kind and edge. Yields dicts: ``image``, ``seed``,
    ``kind``, ``edge`` (None: faceless), and for face scenes ``crop`` (the pasted crop's index in
    ``crops``), ``side``, ``angle`` and ``matrix`` (crop -> scene). The first 64 crops of each seed's
    shuffle are mosaic tiles only, the rest faces (drawn with replacement)."""
    from ab.nn.face.scenes import EDGES, FACELESS, faceless, random_scene

    for seed in seeds:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(crops))
        pool, faces_left = [crops[i] for i in order[:64]], order[64:]
        for kind in FACELESS:
            for i in range(faceless_n):
                tiles = [pool[j] for j in rng.choice(len(pool), mosaic_pieces, replace=False)]
                yield {"image": faceless(kind, seed=int(rng.integers(1 << 31)), crops=tiles),
                       "seed": seed, "kind": kind, "edge": None}
        for kind in FACELESS:
            for edge in EDGES:
                for i in range(faces_n):
                    index = int(faces_left[int(rng.integers(len(faces_left)))])
                    tiles = [pool[j] for j in rng.choice(len(pool), mosaic_pieces, replace=False)]
                    backdrop = faceless(kind, seed=int(rng.integers(1 << 31)), crops=tiles)
                    image, matrix, side, angle = random_scene(crops[index], rng, scene=backdrop, edge=edge)
                    yield {"image": image, "seed": seed, "kind": kind, "edge": edge, "crop": index, "side": side,
                           "angle": angle, "matrix": np.asarray(matrix).tolist()}


def run(crops, seeds, faceless_n: int, faces_n: int, detector, check, mosaic_pieces: int = 16) -> list[dict]:
    """One row per scene: kind, edge (face scenes), seed, BlazeFace's detections with the check's
    presence score each, and for face scenes the paste (side, angle, crop -> scene matrix)."""
    rows = []
    for scene in tqdm(scenes(crops, seeds, faceless_n, faces_n, mosaic_pieces), desc="scenes", unit="img",
                      total=scene_count(seeds, faceless_n, faces_n)):
        image = scene.pop("image")
        scene.pop("crop", None)
        rows.append({**scene, "faces": _record(image, detector(image), check)})
    return rows


def _kept(faces, rule):
    """The detections a rule (min_score, min_presence, max_disagreement; None: no check) keeps."""
    min_score, min_presence, max_disagreement = rule
    return [f for f in faces if f["score"] > min_score and (min_presence is None or (
        f["presence"] > min_presence and f["disagreement"] < max_disagreement))]


def _false_faces(rows, rule) -> tuple[int, int, int]:
    """(photos, photos that drew a false face, false faces) of faceless scenes."""
    drew = [len(_kept(r["faces"], rule)) for r in rows]
    return len(drew), sum(1 for d in drew if d), sum(drew)


def _detections(rows, rule) -> tuple[int, int, int]:
    """(photos, faces found, false faces beside them) of face scenes."""
    hits = false = 0
    for r in rows:
        kept = _kept(r["faces"], rule)
        hit = any(found(f["box"], r) for f in kept)
        hits, false = hits + hit, false + len(kept) - hit
    return len(rows), hits, false


def summarise(rows, min_presence: float, max_disagreement: float) -> tuple[list[str], dict]:
    """Markdown lines and the numbers: false faces on faceless scenes per kind, detection per edge,
    for BlazeFace at each threshold of ``THRESHOLDS``, with the check's presence alone at each of
    ``PRESENCES``, and with the whole check at ``min_presence`` and each of ``DISAGREEMENTS``."""
    from ab.nn.face.scenes import EDGES, FACELESS

    rules = [(f"BlazeFace > {t}", (t, None, None)) for t in THRESHOLDS]
    rules += [(f"+ presence > {p:g}", (0.5, p, np.inf)) for p in PRESENCES]
    rules += [(f"+ presence > {min_presence:g}, disagreement < {d:g}"
               + (" (the check)" if d == max_disagreement else ""), (0.5, min_presence, d))
              for d in sorted({*DISAGREEMENTS, max_disagreement})]
    faceless = {kind: [r for r in rows if r["kind"] == kind and r["edge"] is None] for kind in FACELESS}
    faceless["textured"] = [r for r in rows if r["kind"] != "plain" and r["edge"] is None]
    pasted = {edge: [r for r in rows if r["edge"] == edge and r["kind"] != "plain"] for edge in EDGES}
    pasted["textured"] = [r for r in rows if r["edge"] is not None and r["kind"] != "plain"]
    pasted["plain"] = [r for r in rows if r["edge"] is not None and r["kind"] == "plain"]
    numbers = {}
    lines = ["**Faceless scenes**: photos that drew a false face (Clopper-Pearson 95 %); false faces per photo "
             "(exact Poisson 95 %)", "",
             "| rule | " + " | ".join(f"{k}: photos with one | {k}: per photo" for k in faceless) + " |",
             "|---|" + "---|---|" * len(faceless)]
    for label, rule in rules:
        cells = []
        for kind, scenes in faceless.items():
            n, k, count = _false_faces(scenes, rule)
            numbers[f"{label} | faceless {kind}"] = {"n": n, "photos_with_false_face": k, "false_faces": count}
            cells += [share(k, n), rate(count, n)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "**Face scenes**: found (Clopper-Pearson 95 %) per edge on textured backgrounds (skin, blobs, "
              "mosaic), on all of them, and on the plain background; false faces beside them per textured photo", "",
              "| rule | " + " | ".join(f"{e}: found" for e in pasted) + " | false faces per photo |",
              "|---|" + "---|" * (len(pasted) + 1)]
    for label, rule in rules:
        cells = []
        for edge, scenes in pasted.items():
            n, hits, false = _detections(scenes, rule)
            numbers[f"{label} | faces {edge}"] = {"n": n, "found": hits, "false_faces": false}
            cells.append(share(hits, n))
        n, _, false = _detections(pasted["textured"], rule)
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {rate(false, n)} |")
    by_background = []
    for kind in FACELESS:
        scenes = [r for r in rows if r["kind"] == kind and r["edge"] is not None]
        if scenes:
            n, hits, _ = _detections(scenes, (0.5, min_presence, max_disagreement))
            by_background.append(f"{kind} {share(hits, n)}")
    lines += ["", "Found with the check, by background: " + ", ".join(by_background)]
    return lines, numbers


def check_ms(crop, detector, check, repeats: int = 50) -> float:
    """Median milliseconds of one face-check call on a face pasted into a plain scene."""
    from ab.nn.face.scenes import random_scene

    image = random_scene(crop, np.random.default_rng(0))[0]
    face = detector(image)[0]
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        check.examine(image, face)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset import utkface
    from ab.nn.dataset.sources import open_image
    from ab.nn.face.detect import FaceDetector
    from ab.nn.face.verify import MAX_DISAGREEMENT, MIN_PRESENCE, FaceCheck

    sys.path.insert(0, str(Path(__file__).parent))
    from face_alignment import test_crops

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faceless", type=int, default=150, help="faceless scenes per kind and seed")
    p.add_argument("--faces", type=int, default=40, help="face scenes per textured background, edge and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--crops", type=int, default=600, help="test-split crops sampled (mosaic tiles and faces)")
    p.add_argument("--min-presence", type=float, default=MIN_PRESENCE)
    p.add_argument("--max-disagreement", type=float, default=MAX_DISAGREEMENT)
    p.add_argument("--out", default=None, help="write every scene's detections as JSON here")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    entries, _, blobs, test_size = test_crops(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME), args.crops,
                                              min(args.seeds))
    crops = [open_image(blob) for _, blob in blobs]
    detector, check = FaceDetector(threads=1), FaceCheck(threads=1)
    start = time.perf_counter()
    rows = run(crops, args.seeds, args.faceless, args.faces, detector, check)
    seconds = time.perf_counter() - start
    lines, numbers = summarise(rows, args.min_presence, args.max_disagreement)
    print(f"{len(rows)} scenes ({seconds:.0f} s), seeds {args.seeds}; {len(crops)} of the {test_size} test-split "
          f"crops; detector {detector.name}; the check {check_ms(crops[0], detector, check):.2f} ms per detection "
          f"(median, 1 thread)")
    print("\n".join(lines))
    if args.out:
        Path(args.out).write_text(json.dumps({"seeds": args.seeds, "numbers": numbers, "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
