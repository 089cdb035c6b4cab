"""``python -m ab.nn.train``: sweep hyperparameters with Optuna and record every trial.

LEMUR's flags and defaults, in kebab-case with LEMUR's underscore spellings kept as aliases
(``--save-pth-weights`` = ``--save_pth_weights``), with booleans that are booleans
(``--save-pth-weights``, ``--save-pth-weights 1``/``true``, ``--save-pth-weights false``), plus
workspace, database, data, seed, device, split and smoke-run options. ``main(...)`` keeps LEMUR's Python signature.
"""
from __future__ import annotations

import argparse
import logging
import signal
import sys
from contextlib import contextmanager

from ab.nn.config import ConfigError
from ab.nn.dataset import DataError
from ab.nn.dataset.settings import DEFAULT_SPLIT_SEED, PROTOCOLS, DataSettings
from ab.nn.deploy.latency import RUNS, WARMUP
from ab.nn.deploy.converters import available, parse_converters
from ab.nn.deploy.options import (FIDELITY_IMAGES, FORMATS, TFLITE, ExportOptions, parse_exporters,
                                  parse_fidelity_images, parse_formats, parse_threads)
from ab.nn.registry import RegistryError
from ab.nn.stat import constant_predictor
from ab.nn.stat.engine import DatabaseError, is_storage_error
from ab.nn.sweep.hyperparameters import HyperparameterError, SearchSpace
from ab.nn.sweep.isolation import Limits
from ab.nn.stat.lease import HEARTBEAT_SECONDS, LAPSE_BEATS
from ab.nn.sweep.search import PRUNERS, Search
from ab.nn.sweep.runner import SweepOptions, SweepSummary, plan, run
from ab.nn import workspace
from ab.nn.workspace import Workspace
from ab.nn.util.arguments import Parser
from ab.nn.util.wording import count

_TRUE = {"1", "true", "yes", "on", "y", "t"}
_FALSE = {"0", "false", "no", "off", "n", "f"}


def _bool(text: str) -> bool:
    value = str(text).strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (1/0, true/false, yes/no), got {text!r}")


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="python -m ab.nn.train", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Sweep hyperparameters with Optuna and record every trial in the statistics database.")
    flag = dict(nargs="?", const=True, default=False, type=_bool, metavar="BOOL")
    p.add_argument("-c", "--config", nargs="*", default=None,
                   help="config patterns task_dataset_metric_nn; fewer parts (age-regression_utkface) select "
                        "every matching config, a part may use * wildcards; '*' selects all. Required: the "
                        "README's main job is -c age-regression_utkface_mae_MobileAgeNet")
    p.add_argument("--list-configs", action="store_true", help="list the configs that can run, with their trials")
    p.add_argument("--dry-run", action="store_true",
                   help="show what would run (configs, data, trials, how each hyperparameter is chosen), train nothing")
    p.add_argument("-p", "--nn-prm", "--nn_prm", default="",
                   help="JSON object of fixed hyperparameters, used as given (0 included), e.g. '{\"lr\": 0.001}'")
    p.add_argument("-e", "--epochs", type=_positive, default=1, help="epochs per trial (epoch_max)")
    p.add_argument("-t", "--trials", type=int, default=-1,
                   help="trials wanted per config at this epoch count; negative: that many more")
    own = " (unset: the model's own range where its file declares one, else LEMUR's {})"
    p.add_argument("--min-batch-binary-power", "--min_batch_binary_power",
                   type=int, default=None, help="smallest batch is 2**this" + own.format("0"))
    p.add_argument("-b", "--max-batch-binary-power", "--max_batch_binary_power", type=int, default=None,
                   help="largest batch is 2**this" + own.format("12"))
    p.add_argument("--min-learning-rate", "--min_learning_rate",
                   type=float, default=None, help="lr lower bound (log-uniform)" + own.format("1e-5"))
    p.add_argument("-l", "--max-learning-rate", "--max_learning_rate",
                   type=float, default=None, help="lr upper bound" + own.format("1.0"))
    p.add_argument("--min-momentum", "--min_momentum",
                   type=float, default=None, help="momentum lower bound (uniform)" + own.format("0.0"))
    p.add_argument("-m", "--max-momentum", "--max_momentum",
                   type=float, default=None, help="momentum upper bound" + own.format("1.0"))
    p.add_argument("--min-dropout", "--min_dropout",
                   type=float, default=None, help="dropout lower bound (uniform)" + own.format("0.0"))
    p.add_argument("-d", "--max-dropout", "--max_dropout",
                   type=float, default=None, help="dropout upper bound" + own.format("0.5"))
    p.add_argument("-f", "--transform", default=None, help="fix the transform; default: Optuna picks one")
    p.add_argument("-a", "--nn-fail-attempts", "--nn_fail_attempts", type=_positive, default=30,
                   help="failed trials in a row after which a config is given up")
    p.add_argument("-r", "--random-config-order", "--random_config_order",
                   help="run configs in a seeded random order", **flag)
    p.add_argument("-w", "--workers", type=int, default=2, help="DataLoader worker processes")
    p.add_argument("--threads", type=_positive, default=None,
                   help="torch threads for each trial's training; default: OMP_NUM_THREADS if set, else the "
                        "cores left after one per DataLoader worker (-w), at least 1")
    p.add_argument("--pretrained", type=int, choices=(0, 1), default=None,
                   help="1: always ImageNet weights, 0: never; default: Optuna chooses")
    p.add_argument("--epoch-limit-minutes", "--epoch_limit_minutes", type=float, default=30,
                   help="wall-clock cap per epoch; a cut epoch is flagged 'truncated' in train_stat")
    p.add_argument("--train-missing-pipelines", "--train_missing_pipelines",
                   help="only configs without any result yet", **flag)
    p.add_argument("--save-pth-weights", "--save_pth_weights",
                   help="save each trial's state_dict under out/<config>/<trial>/ (default: true, what load_model "
                        "and predict open; false saves none)", **{**flag, "default": True})
    p.add_argument("--save-onnx-weights", "--save_onnx_weights",
                   help="export each trial's model to ONNX under out/<config>/<trial>/ "
                                               "(adds onnx to --export)", **flag)
    p.add_argument("--export", default="default",
                   help="artifacts made after each trial, with their MAE and latency: none, default "
                        "(onnx,tflite-fp32: what the trial's recorded latency needs), all, or a comma list of "
                        + ", ".join(FORMATS))
    p.add_argument("--converter", default="onnx2tf",
                   help="TFLite converter: onnx2tf (from the ONNX file), litert-torch (from the PyTorch model, "
                        "LEMUR's; its own environment: scripts/setup_litert_torch.sh), or both")
    p.add_argument("--latency-runs", type=_positive, default=RUNS, help="timed runs per latency measurement")
    p.add_argument("--latency-warmup", type=int, default=WARMUP, help="untimed warm-up runs before timing")
    p.add_argument("--latency-threads", default="1", help="thread counts latency is timed at: a comma list, 'all' for "
                                                          "every core (e.g. 1,all); the recorded latency is 1 thread's")
    p.add_argument("--onnx-exporter", default="auto",
                   help="PyTorch's ONNX exporter: auto (TorchScript's, and torch.export's where that fails), "
                        "torchscript or dynamo")
    p.add_argument("--fidelity-images", default=str(FIDELITY_IMAGES), metavar="N|all",
                   help="evaluation and test images (each) every artifact's MAE and largest difference from PyTorch "
                        "are measured on: a seeded sample, the same for every trial of a data key; 'all' for every "
                        "image (on all of UTKFace, most of a trial's export)")
    p.add_argument("--keep-best-only", action="store_true",
                   help="delete the artifact files of every trial but the config's best (rows stay)")
    p.add_argument("--no-resume", action="store_true",
                   help="draw a fresh trial even where an interrupted trial of this sweep could be continued from "
                        "its resume file (by default it continues, with the same trial id, from its last saved epoch)")
    p.add_argument("--in-process", action="store_true",
                   help="run trials in the runner's own process (debugging; the package's models only, workspace "
                        "models too with --unsafe); by default each trial runs in a child process (a sandbox for "
                        "workspace models), so a crash or a limit ends the trial, not the sweep")
    p.add_argument("--unsafe", action="store_true",
                   help="run workspace model code without the sandbox, with this process's rights, where this "
                        "machine has no sandbox (bubblewrap) and with --in-process (recorded on each trial); by "
                        "default such models are refused")
    p.add_argument("--trial-timeout-minutes", type=float, default=None,
                   help="wall-clock limit of a trial (export included); a trial over it is killed, recorded failed")
    p.add_argument("--trial-memory-gb", type=float, default=None,
                   help="resident-memory limit of a trial's processes; a trial over it is killed, recorded failed")
    workspace.add_arguments(p)
    p.add_argument("--no-download", action="store_true", help="no images found: say where to put them instead of "
                                                               "downloading LEMUR's UTKFace parquet files first")
    p.add_argument("--seed", type=int, default=42,
                   help="training seed: initialisation, batch order and the sampler (the split has --split-seed)")
    p.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED,
                   help="seed of the split alone: trials with other --seed values share the same test images")
    p.add_argument("--seeds", type=_positive, default=1,
                   help="train every hyperparameter set N times, with training seeds --seed ... --seed+N-1 "
                        "(replicas on the same split, for mean +- std); -t then counts hyperparameter sets")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    p.add_argument("--max-samples", type=_positive, default=None,
                   help="use at most N training, N evaluation and N test images (smoke runs, tests)")
    p.add_argument("--split", choices=PROTOCOLS, default="paper",
                   help="split protocol: paper (stratified 70/10/20), lemur (LEMUR 2.2.11's stratified 70/10/20 "
                        "in source order), lemur-random (LEMUR's older random 70/30), kfold")
    p.add_argument("--align", action="store_true",
                   help="in-the-wild photos (part1/ part2/ part3/ and their landmark lists): detect each face and "
                        "align it onto the workspace's face template (python -m ab.nn.face.template) as "
                        "python -m ab.nn.predict does, instead of cropping a box around its landmarks; the split "
                        "is recorded as e.g. paper/42+aligned and the data key names the template")
    p.add_argument("--fold", type=int, default=0, help="test fold of the kfold protocol")
    p.add_argument("--folds", type=int, default=5, help="number of folds of the kfold protocol")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--heartbeat-seconds", type=float, default=HEARTBEAT_SECONDS,
                   help=f"this runner's lease heartbeat; other runners reclaim its trials after "
                        f"{LAPSE_BEATS} missed beats")
    p.add_argument("--export-stopped", help="also export trials that LEMUR's gate stopped early", **flag)
    p.add_argument("--export-unlearned", help="also export trials no better than the constant predictor (by default "
                                              "they are not, and the summary says so)", **flag)
    p.add_argument("--pruner", choices=PRUNERS, default="none",
                   help="stop losing trials early on their per-epoch validation accuracy (none: LEMUR's way, every "
                        "trial runs all its epochs); a pruned trial is recorded 'pruned' and counts towards -t")
    p.add_argument("--pruner-warmup", type=int, default=1, metavar="EPOCHS",
                   help="no trial is pruned before this epoch (Optuna's n_warmup_steps, or hyperband's and successive "
                        "halving's min_resource): from-scratch learning curves only separate after a few epochs")
    p.add_argument("--pruner-floor", type=float, default=None, metavar="ACCURACY",
                   help="from epoch 2 on, stop any trial whose validation accuracy is below this (for MAE: 1 - "
                        "MAE/20, e.g. 0.25 = 15 years): the trials that have not started to learn; with any "
                        "--pruner but hyperband, or alone")
    p.add_argument("--objectives", default="accuracy",
                   help="accuracy, or accuracy,latency (batch-1 latency of the exported model) or accuracy,macs "
                        "(multiply-adds: the proxy when --export none) for a two-objective study")
    p.add_argument("--max-latency-ms", type=float, default=None,
                   help="latency constraint (ms, batch 1, 1 thread) with the single accuracy objective")
    p.add_argument("--max-group-gap", type=float, default=None, metavar="YEARS",
                   help="constraint on the gap between the best and the worst group (--group-gap-by) of a trial's "
                        "validation part: age-standardised MAE for race and gender, MAE for age groups")
    p.add_argument("--balance", default=None, metavar="WHAT",
                   help="draw the training images balanced by age (label distribution smoothing), race, or "
                        "age,race (ab.nn.dataset.balance); recorded in each trial's prm as 'balance'")
    p.add_argument("--group-gap-by", default="race", metavar="GROUPS",
                   help="the groups of --max-group-gap: race, gender, age_group, or a combination (race,gender)")
    return p


RANGES = {"lr": ("min_learning_rate", "max_learning_rate", "min_lr", "max_lr"),
          "momentum": ("min_momentum", "max_momentum", "min_momentum", "max_momentum"),
          "dropout": ("min_dropout", "max_dropout", "min_dropout", "max_dropout"),
          "batch": ("min_batch_binary_power", "max_batch_binary_power", "min_batch_power", "max_batch_power")}
"""Hyperparameter -> (its two CLI flags' dests, the two SearchSpace fields)."""


def search_space(args: argparse.Namespace) -> SearchSpace:
    """LEMUR's ranges, where the user set them; a range the user left alone gives way to the model's own."""
    values, explicit = {}, set()
    for name, (low, high, field_low, field_high) in RANGES.items():
        given = {field: getattr(args, flag) for flag, field in ((low, field_low), (high, field_high))
                 if getattr(args, flag) is not None}
        values.update(given)
        if given:
            explicit.add(name)
    return SearchSpace(**values, pretrained=args.pretrained, explicit=frozenset(explicit))


def options_from(args: argparse.Namespace) -> SweepOptions:
    space = search_space(args)
    data = DataSettings(split=args.split, split_seed=args.split_seed, fold=args.fold, folds=args.folds,
                        max_samples=args.max_samples, progress=not args.quiet, download=not args.no_download,
                        align=args.align)
    formats = parse_formats(args.export)
    if args.save_onnx_weights and "onnx" not in formats:
        formats = ("onnx",) + formats
    chosen = parse_converters(args.converter)
    if any(f.startswith(TFLITE) for f in formats):
        available(chosen)
    export = ExportOptions(formats=formats, warmup=args.latency_warmup, runs=args.latency_runs,
                           threads=parse_threads(args.latency_threads),
                           fidelity_images=parse_fidelity_images(args.fidelity_images),
                           onnx_exporters=parse_exporters(args.onnx_exporter),
                           keep_best_only=args.keep_best_only, export_stopped=args.export_stopped,
                           export_unlearned=args.export_unlearned, converters=chosen)
    configs = tuple("" if pattern in ("*", "all") else pattern for pattern in args.config or ("",))
    return SweepOptions(configs=configs, fixed=args.nn_prm, balance=args.balance, epochs=args.epochs,
                        trials=args.trials, space=space, transform=args.transform,
                        fail_attempts=args.nn_fail_attempts, random_config_order=args.random_config_order,
                        workers=args.workers, threads=args.threads, epoch_limit_minutes=args.epoch_limit_minutes,
                        train_missing_pipelines=args.train_missing_pipelines, save_pth=args.save_pth_weights,
                        export=export, seed=args.seed, seeds=args.seeds, device=args.device, data=data,
                        heartbeat_seconds=args.heartbeat_seconds,
                        search=Search.parse(args.pruner, args.objectives, args.max_latency_ms, args.pruner_warmup,
                                            args.pruner_floor, args.max_group_gap, args.group_gap_by),
                        isolate=not args.in_process, unsafe=args.unsafe, resume=not args.no_resume,
                        limits=Limits(minutes=args.trial_timeout_minutes, memory_gb=args.trial_memory_gb),
                        workspace=workspace.from_arguments(args), progress=not args.quiet)


def _mae(value) -> str:
    return "-" if value is None else f"{value:.2f}"


def report(summary: SweepSummary) -> str:
    """Per config: this run's trials, every trial on its data by status, the best trial (id, MAE in
    years with the test interval, folder), and why nothing ran when nothing did."""
    lines = []
    for r in summary.results:
        lines.append(f"{r.config.name}: this run trained {r.trained}, failed {r.failed}"
                     + (f", lost {r.lost} to other runners" if r.lost else ""))
        for finding in r.repaired:
            lines.append(f"  repaired: {finding}")
        lines += [f"  {line}" for line in r.continued + r.not_continued]
        if r.data:
            lines.append(f"  data: {r.data}")
        if r.skipped:
            lines.append(f"  skipped data files: {r.skipped}")
        if r.statuses:
            lines.append("  trials on this data: " + ", ".join(f"{n} {s}" for s, n in sorted(r.statuses.items())))
        if r.baseline:
            beating, judged = r.beating
            lines.append(f"  {constant_predictor.describe(r.baseline)}"
                         + (f"; {beating} of {judged} trained trials on this data are better" if judged else ""))
        if r.best:
            b = r.best
            interval = f" [95% CI {b['test_mae_low']:.2f}, {b['test_mae_high']:.2f}]" if b.get("test_mae_low") else ""
            lines.append(f"  best: trial {b['id']} ({b['status']}, {count(b['epochs_done'], 'epoch')}), val MAE "
                         f"{_mae(b['eval_mae'])}, test MAE {_mae(b['test_mae'])}{interval} years"
                         + (f", files in {r.folder}" if r.folder else ""))
            verdict = constant_predictor.verdict(b, r.baseline)
            if verdict:
                lines.append(f"  best: {verdict}")
        if r.export_share():
            lines.append(f"  {r.export_share()}")
        if r.note:
            lines.append(f"  {r.note}")
        if r.mirror:
            lines.append(f"  JSON mirror: {r.mirror}")
        if r.gave_up:
            lines.append("  gave up: " + r.gave_up.replace("\n", "\n  "))
    return "\n".join(lines)


def cli(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.config is None and not args.list_configs:
        p.error("say what to train with -c, e.g. -c age-regression_utkface_mae_MobileAgeNet (the README's main job) "
                "or -c age-regression (every age config); --list-configs shows them all")
    try:
        if args.list_configs:
            print(list_configs(workspace.from_arguments(args)))
            return 0
        if args.dry_run:
            print(plan(options_from(args)))
            return 0
        with terminate_as_interrupt():
            summary = run(options_from(args))
    except (ConfigError, RegistryError, HyperparameterError, DatabaseError, DataError, ValueError) as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    except KeyboardInterrupt as error:
        name = "SIGTERM" if isinstance(error, Terminated) else "SIGINT"
        print(f"interrupted by {name}: the running trial is recorded as interrupted; run the same command to "
              f"continue", file=sys.stderr)
        return 128 + (signal.SIGTERM if isinstance(error, Terminated) else signal.SIGINT)
    except Exception as error:
        if not is_storage_error(error):
            raise  # a bug (a database integrity or programming error included): with its traceback
        if isinstance(error, OSError):
            p.exit(2, f"{p.prog}: error: cannot write to the workspace: {error}; every write before this one is kept\n")
        reason = str(getattr(error, "orig", None) or error).splitlines()[0]
        p.exit(2, f"{p.prog}: error: cannot use the statistics database {args.db or 'of the workspace'}: {reason} "
                  f"(read-only, full disk or server gone?); every write before this one is kept\n")
    print(report(summary))
    return 0 if summary.ok else 1


def list_configs(ws: Workspace) -> str:
    """Every config a pattern can select, as the run selects them (model files x what each loader serves,
    and configs in the database whose files are still there: not the code ``check_nn`` refused), with its
    trials in the database."""
    from ab.nn.stat import versions
    from ab.nn.stat.store import StatStore
    from ab.nn.sweep.configs import resolve_configs
    from ab.nn.workspace import active

    try:
        store = StatStore(ws.db_url)
        recorded, counts = set(store.configs()), store.trial_counts()
    except versions.Missing:  # a new workspace: nothing recorded yet
        recorded, counts = set(), {}
    with active.use(ws):  # the workspace's own model files count too, as in the run
        configs = sorted(resolve_configs(("",), recorded))
    rows = [f"{'config':<58} {'trials':>6} {'trained':>7}"]
    for config in configs:
        total, trained = counts.get(config.name, (0, 0))
        rows.append(f"{config.name:<58} {total:>6} {trained:>7}")
    return "\n".join(rows)


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's pre-emption, a container stop), raised where the runner is, so that the
    running trial is recorded and the runner exits cleanly."""


@contextmanager
def terminate_as_interrupt():
    def raise_terminated(_signum, _frame):
        raise Terminated("SIGTERM")

    previous = signal.signal(signal.SIGTERM, raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(config="", nn_prm=None, epoch_max=1, n_optuna_trials=-1, min_batch_binary_power=0,
         max_batch_binary_power=12, min_learning_rate=1e-5, max_learning_rate=1.0, min_momentum=0.0,
         max_momentum=1.0, min_dropout=0.0, max_dropout=0.5, transform=None, nn_fail_attempts=30,
         random_config_order=False, num_workers=2, pretrained=None, epoch_limit_minutes=30,
         train_missing_pipelines=False, save_pth_weights=False, save_onnx_weights=False, layer_analysis=False, *,
         root=None, db=None, data_dir=None, seed=42, split_seed=DEFAULT_SPLIT_SEED, seeds=1, device="auto",
         max_samples=None, split="paper", progress=True, export=None, download=True) -> SweepSummary:
    """LEMUR 2.2.11's ``ab.nn.train.main``: its 22 parameters in its positional order (an unknown keyword
    or a 23rd positional argument is a ``TypeError``, as in LEMUR), then this project's keyword-only
    extras. ``layer_analysis=True`` (LEMUR's per-layer weight analysis) is refused: ab.nn does not
    compute it. ``export`` is ``--export``'s value (default: none, or onnx with ``save_onnx_weights``, as
    LEMUR trains without exporting); ``download=False`` is ``--no-download``."""
    if layer_analysis:
        raise ValueError("layer_analysis=True: LEMUR's per-layer analysis (its layer_stat tables) is not "
                         "implemented in ab.nn; call main(...) with layer_analysis=False")
    configs = (config,) if isinstance(config, str) else tuple(config)
    space = SearchSpace(min_lr=min_learning_rate, max_lr=max_learning_rate, min_momentum=min_momentum,
                        max_momentum=max_momentum, min_dropout=min_dropout, max_dropout=max_dropout,
                        min_batch_power=min_batch_binary_power, max_batch_power=max_batch_binary_power,
                        pretrained=pretrained)
    data = DataSettings(split=split, split_seed=split_seed, max_samples=max_samples, download=download)
    options = SweepOptions(configs=configs, fixed=dict(nn_prm or {}), epochs=epoch_max, trials=n_optuna_trials,
                           space=space, transform=transform, fail_attempts=nn_fail_attempts,
                           random_config_order=random_config_order, workers=num_workers,
                           epoch_limit_minutes=epoch_limit_minutes,
                           train_missing_pipelines=bool(train_missing_pipelines),
                           save_pth=save_pth_weights, seed=seed, seeds=seeds,
                           export=ExportOptions(formats=parse_formats(
                               export if export is not None else ("onnx" if save_onnx_weights else "none"))),
                           device=device, data=data, workspace=Workspace.resolve(root, db, data_dir),
                           progress=progress)
    return run(options)


if __name__ == "__main__":
    sys.exit(cli())
