"""Ages of the faces in photos.

    python -m ab.nn.predict photo.jpg other.png folder/ --model best:age-regression_utkface_mae_MobileAgeNet
    python -m ab.nn.predict photo.jpg --model out/<config>/<trial>/model_fp32.tflite --json
    python -m ab.nn.predict photo.jpg --model trial:12 --runtime onnx --out annotated/
    python -m ab.nn.predict photo.jpg --model bundle/

--model: best:<config>, trial:<id>, a trial folder, a bundle folder, or an .onnx/.tflite file.
Output: one line per face (file, box x0,y0,x1,y1 in pixels, age in years, detector score), a line
for an image without a face (every detection passes BlazeFace's threshold and the face-mesh
check, ab.nn.face.verify; --no-face-check turns the check off); unreadable files and images over
--max-pixels are reported on stderr and skipped. --json prints one JSON document instead, with an "error" for each such file. --out
writes annotated copies under that folder and nowhere else (see ab.nn.predict.paths). Exit status:
0, or 1 if any file could not be read or written, 2 for a bad model or argument. A trial (trial:<id>,
best:<config>) that is not better than the constant predictor of its data (its training mean age for
every face; ab.nn.stat.constant_predictor) is said on stderr, and in --json as the model's
"beats_baseline" and "baseline_warning". A model that carries a per-age calibration (a trial folder's
calibration.json from python -m ab.nn.stat calibrate, or a bundle written from one) has its ages read
through it, and says so on stderr; --no-calibration reads them plain.
"""
from __future__ import annotations

import argparse
import json
import sys
import warnings

from tqdm.auto import tqdm

from ab.nn.util.arguments import Parser


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset.decode import DEFAULT_MAX_PIXELS, MAX_PIXELS_ENV
    from ab.nn.face.detect import MIN_SCORE, MODELS
    from ab.nn.face.verify import MIN_PRESENCE
    from ab.nn.predict.models import RUNTIMES

    p = Parser(prog="python -m ab.nn.predict", description=__doc__,
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
    p.add_argument("--no-face-check", dest="face_check", action="store_false",
                   help="report BlazeFace's detections without the face-mesh check (ab.nn.face.verify)")
    p.add_argument("--min-presence", type=float, default=None,
                   help=f"the face check's presence threshold (default: the bundle's, else {MIN_PRESENCE})")
    p.add_argument("--max-pixels", type=int, default=None,
                   help=f"largest image decoded, in pixels (default ${MAX_PIXELS_ENV}, else {DEFAULT_MAX_PIXELS:,})")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--no-calibration", dest="calibrated", action="store_false", default=None,
                   help="read the ages plain even where the model carries a per-age calibration "
                        "(python -m ab.nn.stat calibrate)")
    workspace.add_arguments(p, data=False)
    args = p.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        p.error("--threads must be at least 1")
    if not 0 < args.min_score < 1:
        p.error("--min-score must be between 0 and 1")
    if args.min_presence is not None and not 0 <= args.min_presence < 1:
        p.error("--min-presence must be at least 0 and below 1")
    if args.max_pixels is not None and args.max_pixels < 1:
        p.error("--max-pixels must be at least 1")

    from PIL import Image

    from ab.nn.dataset.decode import max_pixels
    from ab.nn.predict.estimator import AgeEstimator
    from ab.nn.predict.paths import OutputFolder, OutputRefused, walk

    try:
        limit = max_pixels(args.max_pixels)
        estimator = AgeEstimator.from_model(args.model, runtime=args.runtime, threads=args.threads,
                                            template=args.template, detector=args.detector,
                                            min_score=args.min_score, workspace=workspace.from_arguments(args),
                                            face_check=args.face_check, min_presence=args.min_presence,
                                            calibrated=args.calibrated)
    except (LookupError, ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    warning = estimator.info.provenance.get("baseline_warning")
    if warning:
        print(f"warning: {warning}", file=sys.stderr)
    if estimator.calibration is not None and not args.quiet:
        print(f"ages read through the model's per-age calibration (fitted on {estimator.calibration.images:,} "
              f"validation images; --no-calibration reads them plain)", file=sys.stderr)
    files = walk(args.inputs)
    try:
        out = OutputFolder(args.out, [path for path, _ in files]) if args.out else None
    except OutputRefused as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our cap, below Pillow's, decides
        records = _predict_each(files, estimator, out, limit, args)
    unreadable = sum(1 for r in records if r["error"] is not None and "width" not in r)
    unwritten = sum(1 for r in records if r["error"] is not None and "width" in r)
    summary = {"images": len(records), "faces": sum(len(r["faces"]) for r in records),
               "without_face": sum(1 for r in records if "width" in r and not r["faces"]),
               "unreadable": unreadable, **({"unwritten": unwritten} if out is not None else {})}
    if args.json:
        print(json.dumps({**estimator.describe(), "images": records, "summary": summary}, indent=1))
    elif not args.quiet:
        print(f"{summary['images']} images: {summary['faces']} faces, {summary['without_face']} without a face, "
              f"{summary['unreadable']} unreadable" + (f", {unwritten} not written" if unwritten else ""),
              file=sys.stderr)
    return 1 if unreadable or unwritten else 0


def _predict_each(files, estimator, out, limit: int, args) -> list[dict]:
    """One record per input file: its faces, or the error that stopped it (the batch goes on)."""
    from ab.nn.dataset.decode import ImageUnreadable
    from ab.nn.predict.draw import annotate
    from ab.nn.predict.estimator import open_photo
    from ab.nn.predict.paths import OutputRefused

    records = []
    for path, relative in tqdm(files, desc="photos", unit="img", disable=args.quiet or len(files) < 2):
        record = {"file": str(path), "faces": [], "error": None}
        records.append(record)
        try:
            photo = open_photo(path, limit)
            faces = estimator.predict(photo)
        except ImageUnreadable as error:
            record["error"] = str(error)
            tqdm.write(f"skipped {error}", file=sys.stderr)
            continue
        record.update(width=photo.width, height=photo.height, faces=[face.to_json() for face in faces])
        if out is not None:
            try:
                record["annotated"] = str(out.save(annotate(photo, faces), relative))
            except OutputRefused as error:
                record["error"] = str(error)
                tqdm.write(f"not written: {error}", file=sys.stderr)
        if not args.json:
            if not faces:
                tqdm.write(f"{path}\tno face found")
            for face in faces:
                tqdm.write(f"{path}\tbox {','.join(f'{v:.0f}' for v in face.box)}\tage {face.age:.1f}"
                           f"\tscore {face.score:.2f}")
    return records


if __name__ == "__main__":
    sys.exit(main())
