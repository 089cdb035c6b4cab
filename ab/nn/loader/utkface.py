"""UTKFace for age regression (LEMUR loader contract).

Returns the training part and the evaluation part of the active split protocol (default
``paper``: age-stratified 70/10/20, split seed 42); the held-out test part rides along as
``eval_set.held_out_test`` (as in the authors' LEMUR variant) and is evaluated once per trial,
never used for selection. Labels are ages in years, float32, shape (1,). Images come from
``--data-dir`` / ``$LEMUR_DATA`` / ``<root>/data/utkface``; when there are none, LEMUR's parquet files
(Hugging Face ``nu-delta/utkface``) are downloaded there first, where the network allows, unless
``--no-download`` (the runner asks ``data_identity`` before any trial, so this happens once).
"""
from pathlib import Path

from ab.nn import workspace
from ab.nn.dataset import settings, utkface
from ab.nn.face.aligner import TemplateAlignment
from ab.nn.transform._deterministic import eval_transform_for

MINIMUM_ACCURACY = 0.01
PIPELINES = (("age-regression", "mae"),)
"""(task, metric) pairs this dataset serves; with every model file they form the known configs."""


def _check(task):
    if task != "age-regression":
        raise ValueError(f"utkface serves the task 'age-regression', not {task!r}")


def _folder(ws) -> Path:
    """The images' folder; one named by --data-dir / $LEMUR_DATA must exist (it is never created)."""
    if ws.data_dir is not None:
        utkface.require_folder(ws.data_dir)
    return ws.dataset_dir(utkface.NAME)


def loader(transform_fn, task):
    _check(task)
    ws = workspace.active.current()
    norm = utkface.IMAGENET_NORM
    parts = utkface.load(_folder(ws), ws.cache_dir(utkface.NAME), transform_fn(norm),
                         eval_transform_for(transform_fn, norm), settings.active.current(),
                         alignment=TemplateAlignment(ws.face_template_path))
    parts.eval.held_out_test = parts.test
    parts.eval.fingerprint = parts.fingerprint
    parts.eval.digests = parts.digests
    return (1,), MINIMUM_ACCURACY, parts.train, parts.eval


def _plan(task) -> utkface.SplitPlan:
    _check(task)
    ws = workspace.active.current()
    current = settings.active.current()
    return utkface.plan(_folder(ws), ws.cache_dir(utkface.NAME), current, current.progress,
                        TemplateAlignment(ws.face_template_path))


def data_identity(task):
    """The digests and sizes of the active split's parts and the log of skipped files (an ab.nn
    extension of the loader contract, used before any trial starts; LEMUR ignores it). Decodes one
    image, to stop when none can be. Raises the loader's own one-line error, saying where to put the
    files, when the folder does not exist, holds no images or none that decodes."""
    plan = _plan(task)
    utkface.require_readable(plan)
    return {"digests": plan.digests, "counts": plan.counts, "skipped_log": str(plan.catalog.skipped_log)}


def data_labels(task):
    """The true ages of each part of the active split (``train``, ``eval``, ``test``), without decoding an
    image: what the constant-predictor baseline is computed from (an ab.nn extension of the loader
    contract, like ``data_identity``)."""
    plan = _plan(task)
    return {part: plan.catalog.ages[indices] for part, indices in plan.parts.items()}


def data_cache(task, image_size=None):
    """Decode the active split's images into the image cache at ``image_size`` (``None``: the native size),
    making no dataset (an ab.nn extension of the loader contract, like ``data_identity``): how a runner
    prepares the cache its sandboxed trials read, without torch. Returns the size and the count decoded."""
    _check(task)
    ws = workspace.active.current()
    decoded = utkface.decode(_folder(ws), ws.cache_dir(utkface.NAME), [image_size], settings.active.current(),
                             alignment=TemplateAlignment(ws.face_template_path))
    (size, cache), = decoded.caches.items()
    return {"image_size": size, "images": len(decoded.chosen) - len(cache.failures)}
