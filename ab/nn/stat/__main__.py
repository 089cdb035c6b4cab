"""``python -m ab.nn.stat``: move statistics between databases and LEMUR's JSON mirror.

  check         compare the database (the authority) with its copies: Optuna's studies, trials whose
                runner is gone, the JSON mirror; --repair brings the copies back to the database. Exits 0
                when everything agrees (after repair), 1 when something disagrees that was not repaired
  upgrade       bring the database's schema to this code's revision (a new one gets every table)
  export-json   write stat/train/<config>/<epoch>.json and stat/trial/<config>.json from the database
  import-json   load such files (or LEMUR's own stat/train tree) into a database; LEMUR records of the
                mae metric without a raw MAE need --lemur-mae-scale
  copy          copy one database (e.g. a shared PostgreSQL) into another (e.g. a local SQLite file):
                --from URL --to URL; Optuna's studies are rebuilt from the copied trials by the
                reconciler (check --repair, or the next runner start)
  trials        list trials (-c CONFIG, --status S): trial id, status, epochs, MAE in years with its 95% CI, data key
  keys          list the data keys each config was judged on, with their split, sizes and trial counts
  replicas      training-seed replicas grouped (-c CONFIG): n, seeds, val/test MAE mean and std, and the
                test MAE's 95 % interval over images and seeds
  replay-pruners  what each --pruner and --pruner-warmup would have done to a finished study (-c CONFIG,
                --study NAME where the config has several): its learning curves replayed with the sampled
                points held fixed; trials stopped, minutes saved, and whether the best was still found
  attributes    store the gender and race labels of the images that trials were judged on and that have
                none yet (trials recorded before labels were stored), read from the data folder
  groups        who a trial fails (--trial ID, or replicas ID,ID,ID; --by race|gender|age_group|race,gender;
                --split test|eval): MAE, bias, CS@5, age-standardised MAE, false-adult and false-minor rates
                at 13, 18 and 21, each with its 95 % interval, and the gap between groups; --calibrated: after
                per-age calibration fitted on each trial's validation part; --against IDS: paired comparison
                with other trials (or, with --calibrated and no IDS, with the same trials read plain)
  calibrate     fit a trial's per-age calibration on its validation predictions (--trial ID, --method
                inverse|forward) and write it into its folder (calibration.json), where predict and bundles
                read it
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ab.nn.stat import json_import, mirror, versions
from ab.nn.stat.copy import copy_database
from ab.nn.stat.engine import DatabaseError
from ab.nn import workspace
from ab.nn.sweep.search import PRUNERS
from ab.nn.util.arguments import Parser

TRIAL_COLUMNS = {"id": "trial", "config": "config", "status": "status", "epochs_done": "epochs done",
                 "epoch_max": "epochs asked", "eval_mae": "val MAE (years)", "test_mae": "test MAE (years)",
                 "test_mae_low": "test MAE 95% CI low (years)", "test_mae_high": "test MAE 95% CI high (years)",
                 "baseline_test_mae": "constant predictor test MAE (years)", "beats_baseline": "beats it",
                 "seed": "seed", "split": "split", "max_samples": "max samples (images)", "data_key": "data key"}
"""``trials``: the frame's columns shown, with the headers people read (units in brackets)."""


def cli(argv=None) -> int:
    p = Parser(prog="python -m ab.nn.stat", description=__doc__,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("check", "upgrade", "export-json", "import-json", "copy", "trials", "keys", "replicas",
                                       "replay-pruners", "attributes", "groups", "calibrate"))
    p.add_argument("--repair", action="store_true", help="check: bring every copy back to the database")
    p.add_argument("-c", "--config", default=None, help="check, trials, keys, replicas: only this config")
    p.add_argument("--status", default=None, help="trials: only this status")
    p.add_argument("--study", default=None, help="replay-pruners: the Optuna study (as trials list it)")
    p.add_argument("--pruner", nargs="+", default=list(PRUNERS[1:]), choices=PRUNERS[1:],
                   help="replay-pruners: the pruners to replay (default: all)")
    p.add_argument("--pruner-warmup", nargs="+", type=int, default=[1, 2],
                   help="replay-pruners: the warm-ups to replay each pruner with (default: 1 2)")
    p.add_argument("--pruner-floor", type=float, default=None, metavar="ACCURACY",
                   help="replay-pruners: replay each with this --pruner-floor too (and the floor alone)")
    p.add_argument("--trial", default=None, help="groups: a trial id, or replica trial ids joined by commas; "
                                                  "calibrate: a trial id")
    p.add_argument("--by", default="age_group", help="groups: age_group, gender, race, or a combination (race,gender)")
    p.add_argument("--split", default="test", choices=("test", "eval"), help="groups: the part judged")
    p.add_argument("--calibrated", nargs="?", const="inverse", default=None, choices=("inverse", "forward"),
                   help="groups: judge the trials after per-age calibration fitted on their validation part "
                        "(inverse, the default: unbiased per true age; forward: the mean age per prediction)")
    p.add_argument("--method", default="inverse", choices=("inverse", "forward"),
                   help="calibrate: the map to fit (ab.nn.stat.calibration)")
    p.add_argument("--against", nargs="?", const="same", default=None, metavar="IDS",
                   help="groups: paired comparison with these trial ids (comma-separated); alone, with "
                        "--calibrated: with the same trials read plain")
    p.add_argument("--from", dest="source", default=None, help="copy: the database to read (SQLAlchemy URL)")
    p.add_argument("--to", dest="target", default=None, help="copy: the database to write (SQLAlchemy URL)")
    workspace.add_arguments(p)
    p.add_argument("--dir", default=None, help="the stat/train folder (default: <root>/stat/train)")
    p.add_argument("--lemur-mae-scale", type=float, default=None, metavar="YEARS",
                   help="import-json: the accuracy scale of LEMUR records of the mae metric that carry no raw MAE "
                        "(test_mae): accuracy = 1 - MAE/scale; LEMUR's mae.py today writes 20, the age results "
                        "LEMUR 2.2.11 ships use 15. No default: records with a raw MAE have their scale detected")
    args = p.parse_args(argv)
    try:
        return _run(p, args)
    except DatabaseError as error:  # an outdated or newer schema, a database that cannot be opened
        p.exit(2, f"{p.prog}: error: {error}\n")


def _run(p: argparse.ArgumentParser, args) -> int:
    ws = workspace.from_arguments(args)
    folder = Path(args.dir).resolve() if args.dir else ws.stat_train_dir
    if args.command == "upgrade":
        before, after = versions.upgrade(ws.db_url)
        print(f"{versions.shown(ws.db_url)}: " + (f"already at {after}" if before == after else f"{before} -> {after}"))
    elif args.command == "copy":
        if not (args.source and args.target):
            p.exit(2, f"{p.prog}: error: copy needs --from URL and --to URL\n")
        versions.require_current(args.source)
        versions.upgrade(args.target)
        try:
            copied = copy_database(args.source, args.target)
        except ValueError as error:
            p.exit(2, f"{p.prog}: error: {error}\n")
        print(", ".join(f"{table}: {n}" for table, n in copied.items()))
    elif args.command == "replicas":
        from ab.nn.stat.comparison import replicas
        from ab.nn.util.markdown import table

        try:
            frame = replicas(config=args.config, db=ws.db_url)
        except (FileNotFoundError, ValueError) as error:
            p.exit(2, f"{p.prog}: error: {error}\n")
        print(table(frame.drop(columns=["prm_id"])) if not frame.empty else "no trained trials")
    elif args.command == "replay-pruners":
        return _replay_pruners(p, args, ws)
    elif args.command == "attributes":
        from ab.nn.stat.attributes import backfill
        from ab.nn.util.markdown import table

        import pandas as pd

        done = pd.DataFrame(backfill(ws, progress=True))
        print(table(done) if not done.empty else "every image that trials were judged on has its labels")
    elif args.command == "groups":
        return _groups(p, args, ws)
    elif args.command == "calibrate":
        return _calibrate(p, args, ws)
    elif args.command in ("trials", "keys"):
        from ab.nn.stat.frames import trials
        from ab.nn.util.markdown import table

        try:
            frame = trials(config=args.config, status=args.status, db=ws.db_url)
        except (FileNotFoundError, ValueError) as error:
            p.exit(2, f"{p.prog}: error: {error}\n")
        if frame.empty:
            print("no trials")
        elif args.command == "trials":
            print(table(frame[list(TRIAL_COLUMNS)].rename(columns=TRIAL_COLUMNS).astype(object).fillna("-")))
        else:
            keys = ["config", "data_key", "split", "max_samples"]
            counts = frame.groupby(keys, dropna=False).status.value_counts().unstack(fill_value=0)
            sizes = frame.groupby(keys, dropna=False)[["n_train", "n_eval", "n_test"]].max()
            out = sizes.join(counts).reset_index()
            for column in ("max_samples", "n_train", "n_eval", "n_test"):
                out[column] = out[column].map(lambda v: "all" if column == "max_samples" and v != v
                                              else ("-" if v != v else f"{int(v):,}"))
            print(table(out))
    elif args.command == "check":
        from ab.nn.stat.check import check

        report = check(ws.db_url, folder, repair=args.repair, config=args.config)
        print("\n".join(report.lines()))
        return 0 if report.ok else 1
    elif args.command == "export-json":
        versions.require_current(ws.db_url)
        print(f"wrote {mirror.export_tree(ws.db_url, folder)} files under {folder.parent}")
    else:
        if not folder.is_dir():
            p.exit(2, f"{p.prog}: error: no such folder {folder}\n")
        versions.upgrade(ws.db_url)
        try:
            summary = json_import.import_tree(ws.db_url, folder, lemur_mae_scale=args.lemur_mae_scale)
        except ValueError as error:
            p.exit(2, f"{p.prog}: error: {error}\n")
        print(f"{ws.db_url}: {summary}")
    return 0


def _groups(p: argparse.ArgumentParser, args, ws) -> int:
    from ab.nn.stat import comparison
    from ab.nn.util.markdown import table

    if not args.trial:
        p.exit(2, f"{p.prog}: error: groups needs --trial ID (or replicas ID,ID,ID)\n")
    if args.against == "same" and not args.calibrated:
        p.exit(2, f"{p.prog}: error: --against needs trial ids (or --calibrated, to compare with the same trials)\n")
    try:
        ids = _ids(args.trial)
        trials = comparison.calibrated(ids, args.calibrated) if args.calibrated else ids
        if args.against:
            other = ids if args.against == "same" else _ids(args.against)
            frame = comparison.compare(trials, other, split=args.split, db=ws.db_url, by=args.by)
        else:
            frame = comparison.groups(trials, by=args.by, split=args.split, db=ws.db_url)
    except (FileNotFoundError, LookupError, ValueError) as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    attrs = frame.attrs
    how = f" after {args.calibrated} per-age calibration fitted on their eval part" if args.calibrated else ""
    print(f"trials {', '.join(map(str, attrs['trial_ids']))} ({attrs['replicas']} replica(s)){how}, {args.split} "
          f"part, {attrs['images']:,} images"
          + (f"; {attrs['unrecorded']:,} without stored labels (python -m ab.nn.stat attributes)"
             if attrs["unrecorded"] else "")
          + (f"; age-standardised over {', '.join(attrs['standard_bins'])} ({attrs['coverage']:.1%} of the images)"
             if attrs["standard_bins"] else ""))
    if args.against:
        print(f"A: the trials above; B: trials {', '.join(map(str, attrs['trial_ids_b']))} read plain; "
              f"difference = A - B, paired over images" + (" and seeds" if args.against == "same" else ""))
        shown = frame.assign(interval=[f"[{lo:+.3f}, {hi:+.3f}]" for lo, hi in zip(frame.low, frame.high)])
        columns = ["group", "metric", "a", "b", "difference", "interval", "verdict", "n"]
    else:
        shown = frame.assign(interval=[f"[{lo:.3f}, {hi:.3f}]" if lo == lo else ""
                                       for lo, hi in zip(frame.low, frame.high)])
        columns = ["group", "metric", "value", "interval", "n", "highest", "lowest"]
    print(table(shown[columns].astype(object).fillna(""), digits=3))
    return 0


def _calibrate(p: argparse.ArgumentParser, args, ws) -> int:
    from ab.nn.checkpoint import folder_of
    from ab.nn.stat import calibration, comparison, frames

    if not args.trial or not args.trial.isdigit():
        p.exit(2, f"{p.prog}: error: calibrate needs --trial ID (one trial)\n")
    try:
        trial = frames.trial(int(args.trial), db=ws.db_url)
        validation = comparison.judged(int(args.trial), "eval", ws.db_url)
        fitted = calibration.fit(validation.predicted[0], validation.ages, args.method)
    except (FileNotFoundError, LookupError, ValueError) as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    path = calibration.save(fitted, folder_of(ws, trial), trial_id=int(trial["id"]), data_key=trial["data_key"],
                            fitted_on="eval")
    probes = [5.0, 12.0, 18.0, 30.0, 50.0, 70.0, 85.0]
    print(f"trial {trial['id']}: {fitted.method} per-age calibration fitted on {fitted.images:,} validation images "
          f"({len(fitted.predicted)} knots), written to {path}")
    print("predicted -> calibrated (years): " + ", ".join(f"{a:g} -> {b:.1f}" for a, b in zip(probes, fitted(probes))))
    print("predict and bundles of this trial now read ages through it (--no-calibration: plain); judge it with "
          f"python -m ab.nn.stat groups --trial {trial['id']} --calibrated {fitted.method} --against")
    return 0


def _ids(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]
    except ValueError:
        raise ValueError(f"trial ids are whole numbers joined by commas, got {text!r}") from None


def _replay_pruners(p: argparse.ArgumentParser, args, ws) -> int:
    import pandas as pd

    from ab.nn.sweep.replay import replay_pruners
    from ab.nn.sweep.search import SearchError
    from ab.nn.util.markdown import table

    try:
        frame = replay_pruners(config=args.config, pruners=args.pruner, warmups=args.pruner_warmup,
                               study=args.study, db=ws.db_url, floor=args.pruner_floor)
    except (FileNotFoundError, LookupError, ValueError, SearchError) as error:
        p.exit(2, f"{p.prog}: error: {error}\n")
    recorded = frame.iloc[0]
    print(f"{recorded.trials} trials, {recorded.minutes_recorded:.1f} minutes as recorded; the target is the "
          f"recorded best within its 95 % interval over validation images: MAE <= {recorded.target_eval_mae:.3f}")
    shown = frame.assign(warmup=frame.warmup.map(lambda w: "-" if pd.isna(w) else int(w)),
                         best_kept=frame.best_kept.map({True: "yes", False: "no"}),
                         half_time_met=frame.half_time_met.map({True: "yes", False: "no"}).fillna("-"))
    if args.pruner_floor is not None:
        shown = shown.assign(floor=frame.floor.map(lambda f: "-" if pd.isna(f) else f"{f:g}"))
    floor = ["floor"] if args.pruner_floor is not None else []
    print(table(shown[["pruner", "warmup", *floor, "stopped", "minutes", "time_ratio", "best_eval_mae", "best_kept",
                       "minutes_to_target", "target_ratio", "half_time_met", "beyond_record"]], digits=2))
    return 0


if __name__ == "__main__":
    sys.exit(cli())
