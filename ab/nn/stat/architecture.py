"""Architecture statistics of a model built with one hyperparameter set: LEMUR's ``nn_stat`` row
(``ab/nn/util/NNAnalysis.py`` of nn-dataset 2.2.11), computed on first request and kept.

The fields are LEMUR's, computed as LEMUR computes them (layer counts, depth, parameters, memory,
dropout and attention layers, residual hints, name patterns of the code, code length and counts),
except ``flops``: twice the multiply-adds of one batch-1 forward pass counted per convolution
(groups included) and linear layer (``ab.nn.util.macs``), which is also stored as ``macs``; LEMUR's
estimator ignores convolution groups (it overcounts depthwise layers by their channel count) and
adds BatchNorm. A model is built from its registry file, and only when that file's code is the code
the rows were produced with; otherwise the row says why it has no numbers (not stored, so that it is
computed once the code is there).
"""
from __future__ import annotations

import ast
import json

from tqdm.auto import tqdm

from ab.nn.stat import query
from ab.nn.stat.schema import NnStat
from ab.nn.util.lemur_hash import lemur_md5

OUTPUT_ALIASES = {
    "nn_total_params": "total_params", "nn_trainable_params": "trainable_params",
    "nn_frozen_params": "frozen_params", "nn_total_layers": "total_layers", "nn_leaf_layers": "leaf_layers",
    "nn_max_depth": "max_depth", "nn_flops": "flops", "nn_model_size_mb": "model_size_mb",
    "nn_buffer_size_mb": "buffer_size_mb", "nn_total_memory_mb": "total_memory_mb",
    "nn_dropout_count": "dropout_count", "nn_has_attention": "has_attention",
    "nn_has_residual": "has_residual_connections", "nn_is_resnet_like": "is_resnet_like",
    "nn_is_vgg_like": "is_vgg_like", "nn_is_inception_like": "is_inception_like",
    "nn_is_densenet_like": "is_densenet_like", "nn_is_unet_like": "is_unet_like",
    "nn_is_transformer_like": "is_transformer_like", "nn_is_mobilenet_like": "is_mobilenet_like",
    "nn_is_efficientnet_like": "is_efficientnet_like", "nn_code_length": "code_length",
    "nn_num_classes": "num_classes_defined", "nn_num_functions": "num_functions_defined",
    "nn_uses_sequential": "uses_sequential", "nn_uses_modulelist": "uses_modulelist",
    "nn_uses_moduledict": "uses_moduledict", "nn_stats_meta": "meta_json", "nn_stats_error": "error",
}
"""LEMUR's ``data(include_nn_stats=True)`` column -> ``nn_stat`` column, in LEMUR's column order."""
EXTRA_ALIASES = {"nn_macs": "macs"}
"""Our addition, after LEMUR's columns."""
LEMUR_COLUMNS = ("id", "nn_name", "prm_id", "total_layers", "leaf_layers", "max_depth", "total_params",
                 "trainable_params", "frozen_params", "flops", "model_size_mb", "buffer_size_mb", "total_memory_mb",
                 "dropout_count", "has_attention", "has_residual_connections", "is_resnet_like", "is_vgg_like",
                 "is_inception_like", "is_densenet_like", "is_unet_like", "is_transformer_like",
                 "is_mobilenet_like", "is_efficientnet_like", "code_length", "num_classes_defined",
                 "num_functions_defined", "uses_sequential", "uses_modulelist", "uses_moduledict", "error")
"""``nn_stat_data()``'s columns, in LEMUR's order (then ``meta``, and ours: ``macs, in_shape, code_id``)."""


def stat_id(nn_name: str, prm_id: str) -> str:
    """LEMUR's nn_stat id: ``uuid4([nn_name, prm_id])``."""
    return lemur_md5([nn_name, prm_id])


def _depth(module, depth: int = 0) -> int:
    children = list(module.children())
    return depth if not children else max(_depth(child, depth + 1) for child in children)


def code_patterns(code: str) -> dict:
    """LEMUR's name patterns of the source (``detect_architecture_patterns``), as 0/1."""
    low = code.lower()
    flags = {
        "is_resnet_like": "residual" in low or "resnet" in low,
        "is_vgg_like": "vgg" in low,
        "is_inception_like": "inception" in low,
        "is_densenet_like": "dense" in low and "concat" in low,
        "is_unet_like": "unet" in low or ("encoder" in low and "decoder" in low),
        "is_transformer_like": "attention" in low or "transformer" in low,
        "is_mobilenet_like": "mobile" in low or "depthwise" in low,
        "is_efficientnet_like": "efficient" in low or "mbconv" in low,
        "uses_sequential": "nn.Sequential" in code,
        "uses_modulelist": "nn.ModuleList" in code,
        "uses_moduledict": "nn.ModuleDict" in code,
    }
    counts = {"code_length": len(code), "num_classes_defined": code.count("class "),
              "num_functions_defined": code.count("def ")}
    return {k: int(v) for k, v in flags.items()} | counts


def analyze(model, code: str, in_shape) -> dict:
    """The ``nn_stat`` fields of a built model and its source."""
    from torch import nn

    from ab.nn.util.macs import count_macs

    modules = list(model.modules())
    leaves = [m for m in modules if not list(m.children())]
    parameters = list(model.parameters())
    size = sum(p.numel() * p.element_size() for p in parameters) / 2 ** 20
    buffers = sum(b.numel() * b.element_size() for b in model.buffers()) / 2 ** 20
    macs = count_macs(model, in_shape)
    residual = any(isinstance(m, nn.Identity) or any(k in type(m).__name__.lower()
                                                     for k in ("residual", "resnet", "skip", "shortcut"))
                   for m in modules)
    layer_types: dict[str, int] = {}
    for m in leaves:
        layer_types[type(m).__name__] = layer_types.get(type(m).__name__, 0) + 1
    dropouts = [m for m in modules if isinstance(m, (nn.Dropout, nn.Dropout2d, nn.Dropout3d))]
    return {
        "total_layers": len(modules), "leaf_layers": len(leaves), "max_depth": _depth(model),
        "total_params": sum(p.numel() for p in parameters),
        "trainable_params": sum(p.numel() for p in parameters if p.requires_grad),
        "frozen_params": sum(p.numel() for p in parameters if not p.requires_grad),
        "flops": 2 * macs, "macs": macs, "model_size_mb": size, "buffer_size_mb": buffers,
        "total_memory_mb": size + buffers, "dropout_count": len(dropouts),
        "has_attention": int(any(isinstance(m, nn.MultiheadAttention) for m in modules)),
        "has_residual_connections": int(residual),
        "meta_json": json.dumps({"layer_types": layer_types, "dropout_rates": [m.p for m in dropouts]}),
        **code_patterns(code),
    }


class Unavailable(LookupError):
    """The model cannot be built here as its rows were produced; the message says why."""


def _in_shape(transform: str | None, recorded: str | None) -> tuple:
    from ab.nn import registry

    if recorded:
        return tuple(ast.literal_eval(recorded))
    try:
        size = getattr(registry.load(registry.TRANSFORM, transform).transform(((0.5,) * 3, (0.5,) * 3)),
                       "image_size", None)
    except (registry.RegistryError, TypeError, ValueError):
        size = None
    if not size:
        raise Unavailable(f"the input size is unknown (no trial records it, and transform {transform!r} names none)")
    return (1, 3, int(size), int(size))


def _build(nn_name: str, code_id: str | None, prm: dict, in_shape: tuple):
    import torch

    from ab.nn import registry

    if code_id is None:
        raise Unavailable("the code its rows were produced with is unknown (e.g. rows imported from LEMUR's JSON)")
    try:
        code = registry.source(registry.MODEL, nn_name)
    except registry.RegistryError:
        raise Unavailable(f"no model file {nn_name}.py here") from None
    if registry.checksum(code) != code_id:
        raise Unavailable(f"its rows were produced by code {code_id}, the file {nn_name}.py is "
                          f"{registry.checksum(code)}")
    module = registry.load(registry.MODEL, nn_name)
    with torch.no_grad():
        model = module.Net(in_shape, (1,), dict(prm, pretrained=0) if "pretrained" in prm else dict(prm),
                           torch.device("cpu"))
    return model, code


def ensure(url: str, nn_name=None, prm_id=None, progress: bool = True) -> dict[str, dict]:
    """The ``nn_stat`` row (as a dict, by id) of every recorded (model, hyperparameter set) matching the
    filters; rows missing from the table are computed (and stored, unless the model cannot be built
    from the code its rows were produced with: then the returned row only carries the reason)."""
    from ab.nn.stat.store import StatStore, insert_ignore

    have = {row["id"]: row for row in query.nn_stat_rows(url, nn_name=nn_name, prm_id=prm_id)}
    sources: dict[tuple[str, str], list[dict]] = {}
    for row in query.nn_stat_sources(url, nn_name=nn_name, prm_id=prm_id):
        sources.setdefault((row["nn"], row["prm"]), []).append(row)
    missing = {pair: rows for pair, rows in sources.items() if stat_id(*pair) not in have}
    if not missing:
        return have
    prms = query.prm_dicts(url, (prm for _, prm in missing))
    computed = []
    for (nn, prm), rows in tqdm(sorted(missing.items()), desc="architecture statistics", unit="model",
                                disable=not progress or len(missing) < 2, leave=False):
        row = {"id": stat_id(nn, prm), "nn_name": nn, "prm_id": prm}
        known = [r for r in rows if r["nn_code_id"]] or rows
        source = known[0]
        try:
            shape = _in_shape(source["transform"], source["in_shape"])
            model, code = _build(nn, source["nn_code_id"], prms.get(prm, {}), shape)
            row |= analyze(model, code, shape) | {"in_shape": str(list(shape)), "code_id": source["nn_code_id"]}
            computed.append(row)
        except Unavailable as error:
            row["error"] = str(error)
        except Exception as error:  # the model's own failure is its statistic, as in LEMUR
            row |= {"error": f"{type(error).__name__}: {error}"[:2000], "code_id": source["nn_code_id"]}
            computed.append(row)
        have[row["id"]] = {c.name: row.get(c.name) for c in NnStat.__table__.c}
    if computed:
        store = StatStore(url)
        with store.transaction() as session:
            insert_ignore(session, NnStat, [{c.name: r.get(c.name) for c in NnStat.__table__.c} for r in computed])
    return have
