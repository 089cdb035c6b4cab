"""Test data made by the tests themselves: small JPEGs in UTKFace's naming scheme, model files in a test's
own workspace; the benchmark and experiment scripts as modules."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from ab.nn import registry
from ab.nn.workspace import Workspace

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
EXPERIMENTS = BENCHMARKS.parent / "experiments"


def benchmark(name: str):
    """``benchmarks/<name>.py`` as a module."""
    return _script(BENCHMARKS, name)


def experiment(name: str):
    """``experiments/<name>.py`` as a module."""
    return _script(EXPERIMENTS, name)


def _script(folder: Path, name: str):
    """A script as a module (the folder is not a package; a script may import a sibling). Registered in
    ``sys.modules`` like an imported module, which dataclasses and pickle need."""
    sys.path.insert(0, str(folder))
    try:
        spec = importlib.util.spec_from_file_location(f"{name}_{folder.name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(folder))


REAL_DATA_MISSING = "real UTKFace images not found (set LEMUR_DATA to ../shared/data/utkface)"


def utk_name(age: int, gender: int, race: int, index: int) -> str:
    return f"{age}_{gender}_{race}_2017011{index:010d}.jpg.chip.jpg"


def make_face(age: int, size: int = 48, seed: int = 0) -> Image.Image:
    """A synthetic image whose brightness grows with age, so a model can learn something."""
    rng = np.random.default_rng(seed)
    level = 30 + 2 * age
    pixels = np.clip(rng.normal(level, 12, (size, size, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels)


def ages_like_utkface(count: int) -> list[int]:
    """Ages 1-90 spread like UTKFace's (most between 20 and 45), as evenly spaced quantiles."""
    population = np.random.default_rng(1234).normal(32, 15, 100_000).clip(1, 90)
    return [int(a) for a in np.quantile(population, np.linspace(0, 1, count)).round()]


def make_utkface(folder: Path, count: int = 60, size: int = 48, seed: int = 0) -> list[int]:
    """``count`` images with UTKFace-like ages; returns the ages."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ages = ages_like_utkface(count)
    for i, age in enumerate(ages):
        make_face(age, size, seed + i).save(folder / utk_name(age, int(rng.integers(2)), int(rng.integers(5)), i),
                                            quality=90)
    return ages


def write_model(root: Path, name: str, code: str) -> Path:
    """Put a model file into the workspace ``root``'s ``nn/`` folder, where the registry finds it after the
    package's: only runs with that root see it, so tests in parallel never see each other's models."""
    folder = Workspace.resolve(root).code_dir(registry.MODEL.folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.py"
    path.write_text(code)
    return path


def optuna_links(db):
    """Each trial's ``id``, ``uid``, ``study`` and Optuna's numbering of it (``number``,
    ``optuna_trial_id``), read from the ``trial`` table: the link to Optuna's copy, which no frame of
    ``ab.nn.api`` shows."""
    import pandas as pd

    from ab.nn.stat import frames, query

    rows = query.trial_rows(frames.db_url(db))
    return pd.DataFrame(list(rows), columns=rows.columns)[["id", "uid", "study", "number", "optuna_trial_id"]]


def new_postgres_database(url: str) -> str:
    """The URL of a new, empty database on the server of ``url``."""
    from ab.nn.stat.engine import new_postgres_database

    return new_postgres_database(url, prefix="t")


def new_store(url: str):
    """A ``StatStore`` on ``url``, made current first as the runner makes it (``versions.upgrade``): the
    one way for tests to write to a database of their own."""
    from ab.nn.stat import versions
    from ab.nn.stat.store import StatStore

    versions.upgrade(url)
    return StatStore(url)


def open_new_database(url: str, start, answers) -> None:
    """A worker process opening a new database as the runner does (our schema, then Optuna's storage)
    when ``start`` lets all go at once; puts ``ok`` or the error's first line on ``answers``."""
    from ab.nn.stat import studies, versions

    start.wait()
    try:
        versions.upgrade(url)
        studies.storage(url)
        answers.put("ok")
    except Exception as error:
        answers.put(f"{type(error).__name__}: {error}".splitlines()[0])


def open_together(url: str, count: int, timeout: float = 180) -> list[str]:
    """``count`` processes opening the new database ``url`` at the same instant (``open_new_database``), as
    workers started together do; their answers."""
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["tests.helpers", "ab.nn.stat.versions", "ab.nn.sweep.search"])  # starts in ms
    start, answers = context.Barrier(count), context.Queue()
    workers = [context.Process(target=open_new_database, args=(url, start, answers)) for _ in range(count)]
    for worker in workers:
        worker.start()
    try:
        return [answers.get(timeout=timeout) for _ in workers]
    finally:
        for worker in workers:
            worker.join(timeout=60)
            worker.kill()


TINY_MODEL = '''"""A tiny age regressor for tests: global average colour -> linear."""
import torch
from torch import nn


def supported_hyperparameters():
    return {"lr", "momentum"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.linear = nn.Linear(in_shape[1], out_shape[0])
        nn.init.constant_(self.linear.bias, 40.0)

    def forward(self, x):
        return self.linear(x.mean(dim=(2, 3)))

    def train_setup(self, prm):
        self.criteria = (nn.L1Loss(),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"], momentum=prm["momentum"])

    def learn(self, train_data):
        for x, y in train_data:
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(x.to(self.device)), y.to(self.device))
            loss.backward()
            self.optimizer.step()
'''


MISBEHAVING = '''"""A test model that misbehaves as $AB_NN_FAULT_MISBEHAVE says, on its first build only (the file
first-build-done in $AB_NN_FAULT_DIR marks that the first build happened), except "hopeless" (always answers
100 years), "slow", "gated" (every epoch waits for the file gate in $AB_NN_FAULT_DIR) and "export-segfault"
(crashes the process whenever it is exported). Its settings are a fault test's (ab.nn.util.faults), which
reach a sandboxed trial too."""
import ctypes
import os
import subprocess
import time
from pathlib import Path

import torch
from torch import nn

FOLDER = Path(os.environ["AB_NN_FAULT_DIR"])
FLAG = FOLDER / "first-build-done"
HOW = os.environ["AB_NN_FAULT_MISBEHAVE"]


def supported_hyperparameters():
    return {"lr"}


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.first = not FLAG.exists()
        FLAG.touch()
        self.linear = nn.Linear(in_shape[1], 1)

    def forward(self, x):
        if HOW == "export-segfault" and (torch.compiler.is_exporting() or torch.onnx.is_in_onnx_export()):
            ctypes.string_at(0)
        if HOW == "raise" and self.first:
            raise RuntimeError("forward exploded on purpose")
        if HOW == "hopeless":
            return 100 + 0 * self.linear(x.mean(dim=(2, 3)))
        return 30 + self.linear(x.mean(dim=(2, 3)))

    def train_setup(self, prm):
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"])

    def learn(self, train_data):
        if self.first or HOW == "always":
            if HOW == "segfault":
                ctypes.string_at(0)
            elif HOW == "exit":
                os._exit(3)
            elif HOW == "memory":
                hog = torch.ones(3, 1024, 1024, 1024, dtype=torch.uint8)  # 3 GiB, touched
                time.sleep(30)
            elif HOW == "sleep":
                time.sleep(60)
            elif HOW == "grandchild":  # starts a process of its own, then hangs
                child = subprocess.Popen(["sleep", "600"])
                (FOLDER / "pids").write_text(f"{os.getpid()} {child.pid}")
                time.sleep(600)
            elif HOW == "always":
                raise RuntimeError("learn exploded on purpose")
        if HOW == "slow":
            time.sleep(1.5)
        while HOW == "gated" and not (FOLDER / "gate").exists():
            time.sleep(0.2)
        for x, y in train_data:
            self.optimizer.zero_grad()
            (self(x) - y).abs().mean().backward()
            self.optimizer.step()
'''
