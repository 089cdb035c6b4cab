"""``--model`` references -> the files of an age model and its metadata. The one place that knows
how a reference finds its files:

  ``best:<config>``   the config's best trained trial (by validation, as ``ab.nn.api.ranked_trials``
                      ranks them) that has model files
  ``trial:<id>``      a trial of the statistics database
  ``<folder>``        a trial folder (``out/<config>/<trial>/``) or a bundle (``pipeline.json``)
  ``<file>.onnx``     an ONNX file exported here (its metadata properties describe its input)
  ``<file>.tflite``   a TFLite file; its metadata comes from a sidecar (see ``metadata``)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

from ab.nn.predict import metadata
from ab.nn.predict.metadata import ModelInfo

RUNTIMES = ("tflite", "onnx", "torch")
"""Every runtime, in the order a default is picked when the model allows several."""
TFLITE_FILES = ("model_fp32.tflite", "model_fp16.tflite", "model_dynamic-int8.tflite", "model_int8.tflite")
WEIGHTS_FILE = "model.pth"


class ModelNotFound(LookupError):
    """A ``--model`` reference that names no usable model; the message says why."""


@dataclass
class ResolvedModel:
    reference: str
    info: ModelInfo
    files: dict[str, Path]            # runtime -> file (torch: the trial folder)
    bundle: Path | None = None        # the bundle folder, when the reference is one
    detector: dict = field(default_factory=dict)  # the bundle's detector entry
    refine: bool | None = None        # the bundle's alignment setting

    def runtime(self, wanted: str | None) -> str:
        """``wanted`` if this model has it, else the first available of ``RUNTIMES``."""
        if wanted is None:
            return next(r for r in RUNTIMES if r in self.files)
        if wanted not in RUNTIMES:
            raise ValueError(f"unknown runtime {wanted!r}; choose one of {', '.join(RUNTIMES)}")
        if wanted not in self.files:
            raise ModelNotFound(f"{self.reference} cannot run in {wanted}: it has {', '.join(sorted(self.files))} "
                                f"({'train with --save-pth-weights' if wanted == 'torch' else 'export it'})")
        return wanted


def trial_folder(trial: dict, workspace) -> Path:
    """The folder of a trial's files, from its database row (``out/<config>/<trial id>/``)."""
    from ab.nn.checkpoint import folder_of

    return folder_of(workspace, trial)


def _trial_files(folder: Path) -> dict[str, Path]:
    files = {}
    tflite = next((folder / name for name in TFLITE_FILES if (folder / name).is_file()), None)
    if tflite is not None:
        files["tflite"] = tflite
    if (folder / metadata.ONNX_FILE).is_file():
        files["onnx"] = folder / metadata.ONNX_FILE
    if (folder / WEIGHTS_FILE).is_file() and (folder / metadata.META_FILE).is_file():
        files["torch"] = folder
    return files


def _from_trial_folder(reference: str, folder: Path) -> ResolvedModel:
    files = _trial_files(folder)
    if not files:
        raise ModelNotFound(f"{reference}: no model files in {folder} (train with --save-pth-weights and/or "
                            f"--export onnx,tflite-fp32)")
    return ResolvedModel(reference, metadata.for_trial_folder(folder), files)


def _from_bundle(reference: str, folder: Path) -> ResolvedModel:
    from ab.nn.bundle.manifest import read_manifest

    manifest = read_manifest(folder)  # checks every file's sha256
    info = metadata.from_pipeline_json(folder / metadata.PIPELINE_FILE)
    files = {runtime: folder / name for runtime, name in manifest["age_model"].items() if runtime in RUNTIMES}
    return ResolvedModel(reference, info, files, bundle=folder, detector=dict(manifest["detector"]),
                         refine=bool(manifest.get("refine", True)))


def _trial_row(reference: str, workspace) -> dict:
    from ab.nn.stat import frames, ranking

    kind, _, rest = reference.partition(":")
    if kind == "trial":
        if not rest.isdigit():
            raise ModelNotFound(f"{reference}: a trial id is a number (trial:12)")
        try:
            return frames.trial(int(rest), db=workspace.db_url)
        except LookupError as error:
            raise ModelNotFound(str(error)) from None
    rows = ranking.ranked_trials(config=rest, db=workspace.db_url)
    for row in rows.to_dict("records"):
        if _trial_files(trial_folder(row, workspace)):
            return row
    raise ModelNotFound(f"{reference}: no trained trial of {rest} with model files in {workspace.db_url} "
                        f"(train with --save-pth-weights and --export onnx,tflite-fp32)")


def resolve(reference: str, workspace=None) -> ResolvedModel:
    """The model a ``--model`` reference names (see the module's docstring)."""
    from ab.nn.workspace import Workspace

    reference = str(reference)
    kind, sep, rest = reference.partition(":")
    if sep and kind in ("best", "trial") and rest:
        workspace = workspace or Workspace.resolve()
        row = _trial_row(reference, workspace)
        resolved = _from_trial_folder(reference, trial_folder(row, workspace))
        resolved.info = replace(resolved.info, provenance={
            **resolved.info.provenance, "trial_id": int(row["id"]), "config": row["config"],
            "eval_mae": _number(row.get("eval_mae")), "test_mae": _number(row.get("test_mae")),
            **_against_baseline(row, workspace)})
        return resolved
    path = Path(reference).expanduser()
    if path.is_dir():
        if (path / metadata.PIPELINE_FILE).is_file():
            return _from_bundle(reference, path)
        return _from_trial_folder(reference, path)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix == ".onnx":
            return ResolvedModel(reference, metadata.from_onnx(path), {"onnx": path})
        if suffix == ".tflite":
            return ResolvedModel(reference, metadata.for_tflite(path), {"tflite": path})
        raise ModelNotFound(f"{reference}: not a model file (.onnx or .tflite)")
    raise ModelNotFound(f"--model {reference!r}: no such file or folder; use best:<config>, trial:<id>, a trial "
                        f"folder, a bundle folder, or an .onnx/.tflite file")


def _against_baseline(row: dict, workspace) -> dict:
    """The trial against the constant predictor of its data: ``beats_baseline`` (None: no baseline recorded),
    the baseline's test MAE, and ``baseline_warning``, the line that says it is not better (else None)."""
    from ab.nn.stat import constant_predictor, frames

    key = row.get("data_key")
    found = frames.baselines(data_key=key, db=workspace.db_url) if isinstance(key, str) else None
    baseline = found.iloc[0].to_dict() if found is not None and not found.empty else None
    verdict = constant_predictor.verdict(row, baseline)
    return {"beats_baseline": constant_predictor.beats(row, baseline),
            "baseline_test_mae": _number(baseline["test_mae"]) if baseline else None,
            "baseline_warning": f"trial {int(row['id'])} is {verdict}" if verdict else None}


def _number(value):
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if value != value else value
