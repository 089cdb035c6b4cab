"""Ages of the faces in photos.

    python -m ab.nn.predict photo.jpg other.png folder/ --model best:age-regression_utkface_mae_MobileAgeNet
    python -m ab.nn.predict photo.jpg --model out/<config>/<trial>/model_fp32.tflite --json
    python -m ab.nn.predict photo.jpg --model trial:12 --runtime onnx --out annotated/
    python -m ab.nn.predict photo.jpg --model bundle/

--model: best:<config>, trial:<id>, a trial folder, a bundle folder, or an .onnx/.tflite file.
Output: one line per face (file, box x0,y0,x1,y1 in pixels, age in years, detector score), a line
for an image without a face; unreadable files are reported on stderr and skipped. --json prints
one JSON document instead. Exit status: 0, or 1 if any file could not be read, 2 for a bad model
or argument.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tqdm.auto import tqdm

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


def walk(inputs: list[str]) -> list[tuple[Path, Path]]:
    """``(file, name for --out)`` for every input file and every image file under input folders
    (sorted, hidden files skipped); a path that does not exist is kept, to be reported."""
    found = []
    for text in inputs:
        path = Path(text).expanduser()
        if path.is_dir():
            for file in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                               and not any(part.startswith(".") for part in p.relative_to(path).parts)):
                found.append((file, Path(path.name) / file.relative_to(path)))
        else:
            found.append((path, Path(path.name)))
    return found


def _output_path(out: Path, relative: Path, used: set) -> Path:
    target = out / relative
    if target.suffix.lower() not in (".jpg", ".jpeg", ".png"):
        target = target.with_suffix(".png")
    stem, n = target.with_suffix(""), 1
    while target in used:
        target = stem.with_name(f"{stem.name}-{n}").with_suffix(target.suffix)
        n += 1
    used.add(target)
    return target


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.face.detect import MIN_SCORE, MODELS
    from ab.nn.predict.models import RUNTIMES

    p = argparse.ArgumentParser(prog="python -m ab.nn.predict", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="image files and folders (walked recursively)")
    p.add_argument("--model", required=True, help="best:<config>, trial:<id>, a trial or bundle folder, "
                                                  "or an .onnx/.tflite file")
    p.add_argument("--runtime", choices=("torch", "onnx", "tflite"), default=None,
                   help=f"default: the first the model has of {', '.join(RUNTIMES)}")
    p.add_argument("--json", action="store_true", help="one JSON document: boxes, landmarks, scores, ages, model")
    p.add_argument("--out", default=None, help="write each image with boxes and ages drawn on it into this folder")
    p.add_argument("--threads", type=int, default=None, help="threads of the detector and the age model "
                                                             "(default: every core)")
    p.add_argument("--template", default=None, help="alignment template file (default: the bundle's, else "
                                                    "<root>/data/utkface/align_template.json)")
    p.add_argument("--detector", choices=sorted(MODELS), default=None, help="BlazeFace variant (default: the "
                                                                            "template's)")
    p.add_argument("--min-score", type=float, default=MIN_SCORE, help="detector score threshold")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    workspace.add_arguments(p, data=False)
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if not 0 < args.min_score < 1:
        p.error("--min-score must be between 0 and 1")

    from ab.nn.predict.draw import annotate
    from ab.nn.predict.estimator import AgeEstimator, ImageUnreadable, open_photo

    try:
        estimator = AgeEstimator.from_model(args.model, runtime=args.runtime, threads=args.threads,
                                            template=args.template, detector=args.detector,
                                            min_score=args.min_score, workspace=workspace.from_arguments(args))
    except (LookupError, ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    files = walk(args.inputs)
    out = Path(args.out) if args.out else None
    used: set = set()
    records, unreadable = [], 0
    for path, relative in tqdm(files, desc="photos", unit="img", disable=args.quiet or len(files) < 2):
        record = {"file": str(path), "faces": [], "error": None}
        try:
            photo = open_photo(path)
            faces = estimator.predict(photo)
        except ImageUnreadable as error:
            unreadable += 1
            record["error"] = str(error)
            tqdm.write(f"skipped {error}", file=sys.stderr)
            records.append(record)
            continue
        record.update(width=photo.width, height=photo.height, faces=[face.to_json() for face in faces])
        if out is not None:
            target = _output_path(out, relative, used)
            target.parent.mkdir(parents=True, exist_ok=True)
            annotate(photo, faces).save(target)
            record["annotated"] = str(target)
        if not args.json:
            if not faces:
                tqdm.write(f"{path}\tno face found")
            for face in faces:
                tqdm.write(f"{path}\tbox {','.join(f'{v:.0f}' for v in face.box)}\tage {face.age:.1f}"
                           f"\tscore {face.score:.2f}")
        records.append(record)
    summary = {"images": len(records), "faces": sum(len(r["faces"]) for r in records),
               "without_face": sum(1 for r in records if r["error"] is None and not r["faces"]),
               "unreadable": unreadable}
    if args.json:
        print(json.dumps({**estimator.describe(), "images": records, "summary": summary}, indent=1))
    elif not args.quiet:
        print(f"{summary['images']} images: {summary['faces']} faces, {summary['without_face']} without a face, "
              f"{summary['unreadable']} unreadable", file=sys.stderr)
    return 1 if unreadable else 0


if __name__ == "__main__":
    sys.exit(main())
