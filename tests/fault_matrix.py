"""Run the fault matrix (tests/test_fault_matrix.py) and write its outcome to docs/guide/fault-matrix.md:
every fault x backend with its result (passed, failed, skipped, or not run on that backend, and why), what
the faulted run left, and what the same command left when it ran again; then the command, the machine and
the file's wall and CPU time.

    source scripts/postgres.sh && python -m tests.fault_matrix -n 2     # arguments go to pytest
"""
from __future__ import annotations

import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "guide" / "fault-matrix.md"
FILE = "tests/test_fault_matrix.py"
BACKENDS = ("SQLite", "PostgreSQL")
NOT_APPLICABLE = {("ambiguous commit of a trial's end", "SQLite"): "n/a: SQLite has no connection to drop",
                  ("ambiguous commit of a reservation", "SQLite"): "n/a: SQLite has no connection to drop"}


def result(case: ElementTree.Element) -> str:
    for tag, word in (("failure", "FAILED"), ("error", "ERROR")):
        found = case.find(tag)
        if found is not None:
            return f"**{word}**: {_line(found.get('message'))}"
    skipped = case.find("skipped")
    if skipped is None:
        return "passed"
    if skipped.get("type") == "pytest.xfail":
        return f"expected to fail (xfail, strict): {_line(skipped.get('message'))}"
    return f"skipped: {_line(skipped.get('message'))}"


def _line(text: str | None) -> str:
    return (text or "").splitlines()[0].replace("|", "\\|")[:300] if text else ""


def rows(report: Path) -> list[dict]:
    from tests.test_fault_matrix import FAULTS

    found = {}
    for case in ElementTree.parse(report).iter("testcase"):
        properties = {p.get("name"): p.get("value") for p in case.iter("property")}
        fault, backend = properties.get("fault", case.get("name")), properties.get("backend", "-")
        found[fault, backend] = dict(fault=fault, backend=backend, result=result(case),
                                     after_fault=properties.get("after_fault", "-"),
                                     after_resume=properties.get("after_resume", "-"),
                                     seconds=f"{float(case.get('time', 0)):.0f}")
    for fault in FAULTS:
        for backend in BACKENDS:
            why = NOT_APPLICABLE.get((fault, backend), "not run: deselected in this run")
            found.setdefault((fault, backend), dict(fault=fault, backend=backend, result=why, after_fault="-",
                                                    after_resume="-", seconds="-"))
    order = {fault: i for i, fault in enumerate(FAULTS)}
    return sorted(found.values(), key=lambda r: (order.get(r["fault"], len(order)), r["fault"],
                                                 BACKENDS.index(r["backend"]) if r["backend"] in BACKENDS else 2))


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), platform.processor() or "unknown CPU")
    memory = next((int(line.split()[1]) // 2 ** 20 for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal")), 0)
    return (f"{model}, {len(os.sched_getaffinity(0))} cores, {memory} GiB; {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}{_postgres()}")


def _postgres() -> str:
    url = os.environ.get("LEMUR_TEST_PG_URL")
    if not url:
        return ", no PostgreSQL server"
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    with engine.connect() as connection:
        version = connection.execute(text("SHOW server_version")).scalar()
    engine.dispose()
    return f", PostgreSQL {version}"


def page(table: list[dict], command: str, seconds: float, cpu: float, load: tuple, code: int) -> str:
    lines = ["# Fault matrix", "",
             "Each row is one case of `tests/test_fault_matrix.py`: a real sweep (`python -m ab.nn.train -c "
             "age-regression_utkface_mae_<tiny model> -t 1 -e 1`: a runner process, its trial in a child process, "
             "on 60 generated images) meets the fault; then the same command runs again and resumes (in the test's "
             "own process, `--in-process`). Every passed case also checked that no trial was lost or counted twice "
             "(per study and number, per trial and epoch, per mirror entry), that `-t 1` ended with exactly one "
             "trained trial (`-t 2` after the rebuild), that Optuna's copy and the JSON mirror agree with our tables "
             "(`python -m ab.nn.stat check` exits 0), and that no process of the faulted run (every process of its "
             "tree, recorded at the fault, and every process carrying its marker in the environment) was running "
             "4 seconds after it ended. The faults at named points hold a real process there (`ab.nn.util.faults`) "
             "and signal it there. Every fault runs on SQLite and on PostgreSQL, except the ambiguous commits "
             "(PostgreSQL only: SQLite has no connection to drop).", "",
             "*After the fault* is what the faulted run left: its exit, the trials in our table, and the processes "
             "of its tree that were seen and left; *after the same command again* is every trial of the sweep "
             "once the command ran again (an interrupted or failed trial stays recorded and does not count "
             "towards `-t`); *s* is the case's wall time in seconds.", "",
             "The cases fail when a guarantee breaks. Checked by hand on 6 December 2026, each mutation of the "
             "library alone, one case run: no fence on a trial's writes (`store.fenced` checking nothing) fails "
             "*lease reclaimed from a stalled runner* (its runner's second epoch is recorded); no reclaim "
             "(`store.reclaim_lapsed` freeing nothing) fails *runner SIGKILL at train* (the trial stays running); "
             "no reconciliation when a runner opens its study fails *runner SIGKILL at tell* (Optuna's copy stays "
             "RUNNING); a retried reservation that ignores its request key fails *ambiguous commit of a "
             "reservation* (a phantom running slot: the run trains 0); DataLoader workers without `die_with_parent` fail *runner SIGKILL at workers* (a worker "
             "outlives the run under PID 1).", "",
             "| fault | backend | result | after the fault | after the same command again | s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['fault']} | {r['backend']} | {r['result']} | {r['after_fault']} | {r['after_resume']} | "
              f"{r['seconds']} |" for r in table]
    cases = [r for r in table if not r["result"].startswith(("n/a", "not run"))]
    passed = sum(r["result"] == "passed" for r in cases)
    lines += ["", f"{passed} of {len(cases)} cases passed (pytest exit {code}; {len(table) - len(cases)} "
                  f"combinations do not apply or are not run). The file took {seconds / 60:.1f} "
                  f"minutes of wall time and {cpu / 60:.1f} minutes of CPU time (the PostgreSQL server's not counted), "
                  f"with a load average of {load[0]:.1f} when it started and {load[1]:.1f} when it ended (the CPU time is "
                  f"the figure to plan a CI budget with; the wall time depends on what else the machine runs).", "",
              "Produced by", "", "```bash", command, "```", "",
              f"on {machine()}, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC.", ""]
    return "\n".join(lines)


def _cpu() -> float:
    """CPU seconds of every finished descendant (pytest, its workers, the runners, their trial processes);
    the PostgreSQL server's own are not among them."""
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return used.ru_utime + used.ru_stime


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(REPO))
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "report.xml"
        command = [sys.executable, "-m", "pytest", FILE, f"--junitxml={report}", "-p", "no:cacheprovider", *argv]
        load = os.getloadavg()[0]
        start, cpu = time.monotonic(), _cpu()
        code = subprocess.run(command, cwd=REPO, env={**os.environ, "AB_NN_FULL_FAULT_MATRIX": "1"}).returncode
        seconds, cpu = time.monotonic() - start, _cpu() - cpu
        table = rows(report)
    shown = "source scripts/postgres.sh && python -m tests.fault_matrix " + shlex.join(argv)
    PAGE.write_text(page(table, shown, seconds, cpu, (load, os.getloadavg()[0]), code))
    print(f"wrote {PAGE.relative_to(REPO)}: {len(table)} rows, {seconds:.0f} s, {cpu:.0f} CPU-s")
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
