"""The dependency direction of the library (docs/guide/architecture.md, "Layers"), read from the code:
every ``import`` and ``from ... import`` of every module under ``ab/`` (at module level and inside
functions) is mapped to its floor; no module imports a higher floor, no module imports ``ab.nn.api``,
and no two packages import each other.

``FLOORS`` is where each module's place is written down: a new package or top-level module has to
be put on a floor here before this test passes."""
from __future__ import annotations

import ast
import functools
import json
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from ab.nn import api

ROOT = Path(__file__).resolve().parents[1]
API = "ab.nn.api"

FLOORS = (
    ("base", ("ab", "ab.nn", "ab.nn.util", "ab.nn.sandbox", "ab.nn.nn", "ab.nn.metric", "ab.nn.transform")),
    ("core", ("ab.nn.config", "ab.nn.workspace", "ab.nn.registry", "ab.nn.checkpoint", "ab.nn.codequality",
              "ab.nn.model_probe")),
    ("domain", ("ab.nn.dataset", "ab.nn.face", "ab.nn.stat")),
    ("loaders", ("ab.nn.loader",)),
    ("services", ("ab.nn.sweep", "ab.nn.deploy", "ab.nn.predict", "ab.nn.moe", "ab.nn.bundle", "ab.nn.report",
                  "ab.nn.check_nn", "ab.nn.quarantine")),
    ("entry points", ("ab.nn.train", API, "ab.nn.util.Const", "ab.nn.nn_template", "ab.nn.cli", "__main__")),
)
"""Bottom to top; a module may import its own floor and the floors below it. A name stands for the
module and everything under it, the longest name that fits deciding (``ab`` and ``ab.nn`` only for
the package files themselves); ``__main__`` for every command-line module (``python -m ...``).
``ab.nn.util.Const`` is LEMUR's path for NN-GPT's scripts, reading the workspace: an entry point
that happens to live in ``util``, not a helper. ``ab.nn.nn_template`` writes the torchvision
comparison model files (``python -m ab.nn.nn_template``): a contributor's command, imported by nothing."""
EXACT = {"ab", "ab.nn"}
KNOWN_CYCLES = {frozenset({"ab.nn.bundle", "ab.nn.predict"})}
"""Package cycles left, each of which must still exist (so that it is struck from here once gone).
bundle <-> predict: predict reads bundles through ``bundle.manifest``, which imports neither package,
and ``bundle.writer`` builds on predict; no module cycle, but one between the packages until the
manifest reader moves out of ``ab.nn.bundle``."""

RANK = {name: rank for rank, (_, names) in enumerate(FLOORS) for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@functools.cache
def modules() -> dict[str, Path]:
    """Every module of the package by name, listed when first asked."""
    return {module_name(p): p for p in sorted((ROOT / "ab").rglob("*.py"))}


def floor(module: str) -> int:
    """The rank of ``module``'s floor (index into ``FLOORS``)."""
    if module.rsplit(".", 1)[-1] == "__main__":
        return RANK["__main__"]
    if module in EXACT:
        return RANK[module]
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in RANK and prefix not in EXACT:
            return RANK[prefix]
    raise LookupError(f"{module} is on no floor: put it on one in FLOORS (tests/test_layering.py) and in "
                      f"docs/guide/architecture.md")


def imports(module: str, path: Path) -> list[tuple[int, str, str]]:
    """``(line, imported module, source text)`` of each import of the library in ``path``: ``from a
    import b`` is ``a.b`` when that is a module, else ``a``; relative imports are resolved."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    text = path.read_text()
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                       for alias in node.names]
        else:
            continue
        source = ast.get_source_segment(text, node) or ""
        found += [(node.lineno, target, source) for target in dict.fromkeys(targets)
                  if target == "ab" or target.startswith("ab.")]
    return found


def where(module: str, line: int, path: Path | None = None) -> str:
    path = path or modules()[module]
    return f"{path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}:{line} ({module})"


@functools.cache
def judged() -> tuple[tuple[str, Path, int, str, str], ...]:
    """``(module, path, line, imported module, source text)`` of every import of the library."""
    return tuple((module, path, line, target, source) for module, path in modules().items()
                 for line, target, source in imports(module, path))


def against_layering(found) -> list[str]:
    """One message per import of ``found`` (``judged()``'s tuples) that goes up a floor or to the API."""
    problems = []
    for module, path, line, target, source in found:
        if target == API or target.startswith(API + "."):
            if module != API:
                problems.append(f"{where(module, line, path)}: `{source}`: nothing in the library imports {API}; "
                                f"call the module it takes the function from")
            continue
        mine, theirs = floor(module), floor(target)
        if theirs > mine:
            problems.append(f"{where(module, line, path)}: `{source}`: a {FLOORS[mine][0]} module imports {target}, "
                            f"on the higher floor {FLOORS[theirs][0]}")
    return problems


def test_no_module_imports_a_higher_floor_or_the_public_api():
    problems = against_layering(judged())
    assert not problems, "imports against the layering:\n" + "\n".join(problems)


def unit(module: str) -> str:
    """The package (or top-level module) a module belongs to; each entry point is one of its own."""
    if module in EXACT or floor(module) == len(FLOORS) - 1:
        return module
    return ".".join(module.split(".")[:3])


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_packages_import_each_other():
    """A floor says what may be imported, not that two packages of one floor stay apart: ``dataset``
    and ``face`` (or ``sweep`` and ``deploy``) importing each other is a cycle even on one floor."""
    graph, evidence = defaultdict(set), defaultdict(list)
    for module, path, line, target, source in judged():
        a, b = unit(module), unit(target)
        if a != b:
            graph[a].add(b)
            evidence[a, b].append(f"{where(module, line, path)}: `{source}`")
    found = [c for c in cycles(graph) if frozenset(c) not in KNOWN_CYCLES]
    report = []
    for component in found:
        report.append(" <-> ".join(component))
        report += [f"  {e}" for e in dict.fromkeys(e for a in component for b in component for e in evidence[a, b])]
    assert not found, "packages that import each other:\n" + "\n".join(report)
    gone = [sorted(c) for c in KNOWN_CYCLES if not any(c <= set(component) for component in cycles(graph))]
    assert not gone, f"no longer cycles, strike them from KNOWN_CYCLES: {gone}"


def test_every_module_is_on_a_floor():
    for module in modules():
        floor(module)
    assert floor("ab.nn.util.digest") < floor("ab.nn.registry") < floor("ab.nn.stat.store") \
        < floor("ab.nn.loader.utkface") < floor("ab.nn.sweep.runner") < floor("ab.nn.stat.__main__") == floor(API)
    with pytest.raises(LookupError, match="on no floor"):
        floor("ab.nn.somewhere_new")


def test_imports_are_read_wherever_they_are_and_judged(tmp_path):
    """What the test reads: module-level and in-function imports, ``from a import b`` as module ``a.b``
    or as ``a``, relative imports; and what it flags: a domain module importing a service, and the API."""
    probe = tmp_path / "probe.py"
    probe.write_text("import os\nfrom ab.nn import workspace, __version__\n\n\ndef f():\n"
                     "    from . import query\n    from ..sweep.search import Search\n    import ab.nn.api\n")
    found = imports("ab.nn.stat.probe", probe)
    assert sorted((line, target) for line, target, _ in found) == [
        (2, "ab.nn"), (2, "ab.nn.workspace"), (6, "ab.nn.stat.query"), (7, "ab.nn.sweep.search"), (8, API)]
    problems = against_layering(("ab.nn.stat.probe", probe, *entry) for entry in found)
    assert len(problems) == 2
    assert any(p.endswith("probe.py:7 (ab.nn.stat.probe): `from ..sweep.search import Search`: a domain module "
                          "imports ab.nn.sweep.search, on the higher floor services") for p in problems)
    assert any("probe.py:8" in p and "nothing in the library imports ab.nn.api" in p for p in problems)
    assert ("ab.nn.api", "ab.nn.checkpoint") in {(m, t) for m, _, _, t, _ in judged()}  # inside load_model


def test_the_statistics_commands_start_without_torch():
    """``python -m ab.nn.stat`` (import, copy, check, trials) reads and writes rows: importing torch would
    add ~400 MiB and seconds to every command and hide what an import's own memory does."""
    code = "import sys, ab.nn.stat.__main__, ab.nn.stat.groups; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_trial_child_starts_without_the_database_layer():
    """A trial child writes through its runner (``ab.nn.sweep.trial_child``): SQLAlchemy, pandas and Optuna
    would add seconds of imports to the start of every sandboxed trial and every ``check_nn`` call."""
    code = ("import sys, ab.nn.sweep.trial_child; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'sqlalchemy', 'pandas', 'optuna', 'alembic'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_a_runner_reads_the_package_transforms_sizes_without_torch():
    """A sweep's runner reads every package transform's size (``ab.nn.sweep.input_sizes``) and prepares the
    image cache by size (``trial_data.prepare``); building the pipelines would import torch and torchvision
    (and ``torch._dynamo`` under it), seconds of every runner's start, for a number."""
    code = ("import sys; from ab.nn import registry; from ab.nn.sweep import input_sizes; "
            "from ab.nn.dataset import trial_data; "
            "fns = [registry.load(registry.TRANSFORM, n).transform for n in registry.names(registry.TRANSFORM)]; "
            "sizes = [(input_sizes.transform_size(n), trial_data._stated_size(f)) "
            "for n, f in zip(registry.names(registry.TRANSFORM), fns)]; "
            "print(len(sizes), all(a == (b, b) for a, b in sizes), 'torch' in sys.modules, 'torchvision' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    count, same, torch, torchvision = out.split()
    assert int(count) >= 10 and same == "True" and torch == torchvision == "False", out


WATCHED_RUNNER = r"""
import json, sys, traceback
first = []
class Watch:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "torchvision") and not first:
            first.append(name + " imported at\n" + "".join(traceback.format_stack()[-14:-1]))
        return None
sys.meta_path.insert(0, Watch())
from ab.nn import train
code = train.cli(sys.argv[1:])
print(json.dumps({"code": code, "first": first}))
"""


def test_a_runner_whose_trials_run_in_children_never_imports_torch(root, utk_dir, tiny_model):
    """A runner plans, records and hands out trials; its children train. Importing torch (its CUDA libraries
    with it) cost about 5 CPU seconds of every runner's start on the development machine, and a sweep of many
    short trials, CI's, starts hundreds. A whole sweep here (a trial in its sandbox, evaluated, its ONNX file
    exported and measured, the runner keeping the best) and its start: torch never enters the runner."""
    out = subprocess.run([sys.executable, "-c", WATCHED_RUNNER, "--root", str(root), "--data-dir", str(utk_dir),
                          "-c", f"age-regression_utkface_mae_{tiny_model}", "-e", "1", "-t", "1", "-f", "norm_64",
                          "-b", "4", "--min_batch_binary_power", "4", "-l", "1e-3", "--min_learning_rate", "1e-4",
                          "--pretrained", "0", "-w", "0", "--export", "onnx", "--export-unlearned", "--keep-best-only",
                          "--latency-runs", "1", "--latency-warmup", "0", "--quiet"],
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    said = json.loads(out.stdout.strip().splitlines()[-1])
    assert said["first"] == [], said["first"][0]
    assert said["code"] in (0, None)
    trial = api.trials(db=root / "db" / "ab.nn.db").iloc[0]
    exports = api.exports(db=root / "db" / "ab.nn.db")
    assert trial.status == "complete" and trial.sandbox == "bubblewrap", trial
    assert set(exports.format) >= {"onnx"} and (exports[exports.format == "onnx"].status == "ok").all(), exports
