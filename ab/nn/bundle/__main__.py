"""Write a bundle an app can ship: the age model (.tflite and .onnx), the face detector and its
face check (.tflite; --no-face-check leaves the check out),
pipeline.json (alignment template, crop size, input layout, colour order, mean/std, age range,
the model's per-age calibration where it has one, provenance, sha256 of every file) and reference.py (the whole pipeline in numpy, Pillow and LiteRT).

    python -m ab.nn.bundle --model best:age-regression_utkface_mae_MobileAgeNet --to bundle/
    python -m ab.nn.predict photo.jpg --model bundle/          # runs from the bundle alone
    cd bundle && python reference.py photo.jpg                  # so does the reference
"""
from __future__ import annotations

import argparse
import sys

from ab.nn.util.arguments import Parser


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.bundle.writer import PRECISIONS, write_bundle

    p = Parser(prog="python -m ab.nn.bundle", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="best:<config>, trial:<id>, a trial folder, or an .onnx/.tflite file")
    p.add_argument("--to", required=True, help="the bundle folder to write")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32", help="of the TFLite age model")
    p.add_argument("--template", default=None, help="alignment template file (default: the model's, else "
                                                    "<root>/data/utkface/align_template.json)")
    p.add_argument("--force", action="store_true", help="replace a non-empty --to folder")
    p.add_argument("--no-face-check", dest="face_check", action="store_false",
                   help="leave out the face-mesh check of each detection (ab.nn.face.verify; 2.4 MB)")
    p.add_argument("--no-calibration", dest="calibrated", action="store_false",
                   help="leave out the model's per-age calibration (python -m ab.nn.stat calibrate) where it has one")
    workspace.add_arguments(p, data=False)
    args = p.parse_args(argv)
    from ab.nn.bundle.manifest import read_manifest

    try:
        folder = write_bundle(args.model, args.to, args.precision, args.template, workspace.from_arguments(args),
                              args.force, args.face_check, args.calibrated)
    except (LookupError, ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    manifest = read_manifest(folder)
    print(f"bundle written to {folder}:")
    for name, entry in manifest["files"].items():
        print(f"  {name:22s} {entry['bytes']:>10,d} bytes  sha256 {entry['sha256']}")
    print(f"  pipeline.json          (template of {manifest['template']['images']} training crops, "
          f"input {manifest['input']['input_size']}x{manifest['input']['input_size']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
