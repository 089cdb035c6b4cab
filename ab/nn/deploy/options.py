"""What a sweep asks of the deployment path (formats, latency runs, fidelity images, converters,
ONNX exporters) and the words its rows are recorded with. The runner only parses and passes these on to
its trials, so this module imports neither torch nor a runtime: a runner starts without them."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from ab.nn.deploy import converters
from ab.nn.deploy.latency import RUNS, WARMUP
from ab.nn.deploy.tflite_convert import PRECISIONS
from ab.nn.stat.states import COMPLETE, STOPPED
from ab.nn.util import system

EXPORTERS = ("torchscript", "dynamo")
"""The ONNX exporters, tried in this order (``ab.nn.deploy.onnx_export``)."""


def parse_exporters(text: str) -> tuple[str, ...]:
    """``--onnx-exporter``: ``auto`` (every exporter, in ``EXPORTERS``' order), or one of ``EXPORTERS``."""
    text = str(text).strip().lower()
    if text == "auto":
        return EXPORTERS
    if text in EXPORTERS:
        return (text,)
    raise ValueError(f"--onnx-exporter: {text!r} is not one of auto, {', '.join(EXPORTERS)}")


TFLITE = "tflite-"
FORMATS = ("onnx",) + tuple(TFLITE + p for p in PRECISIONS)
DEFAULT_FORMATS = ("onnx", "tflite-fp32")
"""What the recorded latency needs (LiteRT fp32, and the ONNX file it is converted from): every other
precision costs a conversion and a measuring process per trial, so it is made only when asked for."""
OK, FAILED, DELETED, SKIPPED = "ok", "failed", "deleted", "skipped"
PIPELINE = "pipeline"
"""The format of a trial's one row about its export as a whole: its seconds, or why it failed or was skipped."""


def parse_formats(text: str) -> tuple[str, ...]:
    """``none``, ``default`` (ONNX + TFLite fp32), ``all``, or a comma list of ``FORMATS``."""
    text = text.strip().lower()
    if text in ("", "none", "off", "0"):
        return ()
    if text == "default":
        return DEFAULT_FORMATS
    if text == "all":
        return FORMATS
    chosen = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [f for f in chosen if f not in FORMATS]
    if unknown:
        raise ValueError(f"--export: unknown format(s) {', '.join(unknown)}; choose from none, default, all, "
                         f"{', '.join(FORMATS)}")
    if any(f.startswith(TFLITE) for f in chosen) and "onnx" not in chosen:
        chosen = ("onnx",) + chosen  # TFLite is converted from the ONNX file
    return chosen


FIDELITY_IMAGES = 500
"""Images of each of the eval and test parts an artifact's fidelity is measured on by default (the same
seeded sample for every trial of a data key, ``inputs.sample``). A conversion that changes a model changes
its ages on any few hundred faces; passing all 7,112 of UTKFace's eval and test images through ONNX Runtime
and LiteRT was most of a full-data trial's export (at 224 px, minutes per runtime)."""


def parse_fidelity_images(text: str) -> int | None:
    """``--fidelity-images``: a positive count per split, or ``all`` (``None``)."""
    text = str(text).strip().lower()
    if text == "all":
        return None
    if text.isdigit() and int(text) > 0:
        return int(text)
    raise ValueError(f"--fidelity-images: {text!r} is neither a positive number of images nor 'all'")


def parse_threads(text: str) -> tuple[int, ...]:
    """``--latency-threads``: a comma list of thread counts, ``all`` for every core (``0``). The default, 1, is
    the recorded latency's; timing at every core too costs most on a busy machine, where a second
    thread waits for a core (PyTorch at 2 threads took 779 ms a call against 39 ms at 1 on our shared
    2-core machine)."""
    counts = []
    for part in (p.strip().lower() for p in text.split(",") if p.strip()):
        if part == "all":
            counts.append(0)
        elif part.isdigit() and int(part) > 0:
            counts.append(int(part))
        else:
            raise ValueError(f"--latency-threads: {part!r} is neither a positive thread count nor 'all' (e.g. 1,all)")
    if not counts:
        raise ValueError("--latency-threads: name at least one thread count, e.g. 1 or 1,all")
    return tuple(dict.fromkeys(counts))


@dataclass(frozen=True)
class ExportOptions:
    formats: tuple[str, ...] = DEFAULT_FORMATS
    warmup: int = WARMUP
    runs: int = RUNS
    threads: tuple[int, ...] = (1,)  # latency thread counts; 0: every core (parse_threads)
    batch: int = 64                # batch of the fidelity passes (latency is batch 1)
    calibration_images: int = 200
    fidelity_images: int | None = FIDELITY_IMAGES  # per split; None: every eval and test image
    keep_best_only: bool = False
    timeout: float = 1800.0
    export_stopped: bool = False  # also export trials stopped early (LEMUR's gate), not only complete ones
    export_unlearned: bool = False  # also export trials no better than the constant predictor
    converters: tuple[str, ...] = (converters.ONNX2TF,)  # TFLite converters (--converter)
    onnx_exporters: tuple[str, ...] = EXPORTERS  # tried in order (--onnx-exporter)

    def thread_counts(self) -> tuple[int, ...]:
        return tuple(sorted({count or system.cpu_count() for count in self.threads or (1,)}))

    def to_json(self) -> dict:
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, value: dict) -> "ExportOptions":
        return cls(**{name: tuple(item) if isinstance(item, list) else item for name, item in value.items()})

    @property
    def enabled(self) -> bool:
        return bool(self.formats)

    @property
    def states(self) -> tuple[str, ...]:
        """Trial outcomes that are exported: those that trained to the end."""
        return (COMPLETE, STOPPED) if self.export_stopped else (COMPLETE,)
