"""``python -m ab.nn.deploy``: deploy a trained trial again, from its checkpoint.

    python -m ab.nn.deploy --trial 12 --export all          # e.g. add the int8 artifacts
    python -m ab.nn.deploy --best age-regression_utkface_mae_MobileAgeNet

The trial must have been trained with ``--save-pth-weights``. New artifact and latency rows are
added beside the earlier ones; ``python -m ab.nn.deploy.report`` shows the table.
"""
from __future__ import annotations

import argparse
import sys

from ab.nn import checkpoint
from ab.nn.config import Config
from ab.nn.dataset import trial_data
from ab.nn.dataset.identity import DataMismatch
from ab.nn.deploy.latency import RUNS, WARMUP
from ab.nn.deploy.converters import available, parse_converters
from ab.nn.deploy.options import (FIDELITY_IMAGES, FORMATS, TFLITE, ExportOptions, parse_exporters,
                                  parse_fidelity_images, parse_formats, parse_threads)
from ab.nn.deploy.pipeline import Deployment, NetSource, metadata_for
from ab.nn.deploy.report import best_trial
from ab.nn.stat import frames
from ab.nn.stat.store import StatStore
from ab.nn import workspace
from ab.nn.workspace import Workspace
from ab.nn.util.arguments import Parser


def deploy(trial: dict, ws: Workspace, options: ExportOptions) -> None:
    folder = checkpoint.folder_of(ws, trial)
    model, meta = checkpoint.load(folder)
    data = trial_data.load_judged(trial, ws, meta["prm"]["transform"], progress=True)
    config = Config.parse(trial["config"])
    in_shape = tuple(meta["in_shape"])
    metadata = metadata_for(config, int(trial["id"]), in_shape, data, model, ws.face_template_path)
    store = StatStore(ws.db_url)
    source = NetSource.of(config, meta["prm"], meta["out_shape"])
    Deployment(store, int(trial["id"]), config, folder, options, in_shape, source).run(model, data, metadata)


def cli(argv=None) -> int:
    p = Parser(prog="python -m ab.nn.deploy", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--trial", type=int, help="trial id")
    which.add_argument("--best", help="the best trial of this config")
    p.add_argument("--export", default="default", help="none, default, all, or a comma list of " + ", ".join(FORMATS))
    p.add_argument("--converter", default="onnx2tf",
                   help="TFLite converter: onnx2tf (from the ONNX file), litert-torch (from the PyTorch model, "
                        "LEMUR's; its own environment: scripts/setup_litert_torch.sh), or both")
    p.add_argument("--latency-runs", type=int, default=RUNS)
    p.add_argument("--latency-warmup", type=int, default=WARMUP)
    p.add_argument("--latency-threads", default="1",
                   help="thread counts: a comma list, 'all' for every core (e.g. 1,all)")
    p.add_argument("--onnx-exporter", default="auto",
                   help="PyTorch's ONNX exporter: auto (TorchScript's, and torch.export's where that fails), "
                        "torchscript or dynamo")
    p.add_argument("--fidelity-images", default=str(FIDELITY_IMAGES), metavar="N|all",
                   help="evaluation and test images (each) the artifacts are measured on: a seeded sample, or all")
    workspace.add_arguments(p)
    args = p.parse_args(argv)
    ws = workspace.from_arguments(args)
    try:
        options = ExportOptions(formats=parse_formats(args.export), warmup=args.latency_warmup, runs=args.latency_runs,
                                threads=parse_threads(args.latency_threads),
                                fidelity_images=parse_fidelity_images(args.fidelity_images),
                                onnx_exporters=parse_exporters(args.onnx_exporter),
                                converters=parse_converters(args.converter))
        if any(f.startswith(TFLITE) for f in options.formats):
            available(options.converters)
        if args.best:
            trial = best_trial(args.best, ws.db_url)
        else:
            trial = frames.trial(args.trial, db=ws.db_url)
        with workspace.active.use(ws):  # a model file of that workspace's nn/ folder is found too
            deploy(trial, ws, options)
    except (LookupError, FileNotFoundError, ValueError, DataMismatch) as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    print(f"deployed trial {trial['id']} of {trial['config']}; see python -m ab.nn.deploy.report -c {trial['config']}")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
