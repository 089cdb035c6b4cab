"""``python -m ab.nn.stat check [--repair]``: every place where a copy disagrees with our record.

Our tables are the authority; what is checked against them: Optuna's copy of every study (states,
values, trials missing on either side, directions; ``ab.nn.stat.studies``), running trials whose
runner is gone, the JSON mirror (entries still queued in ``outbox``, files that do not parse). With
``repair`` each is brought back to our record where that is possible now; what cannot be (a study
with live runners that needs a rebuild, a mirror folder that cannot be written) stays a finding.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import optuna
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ab.nn.stat import engine as engines, mirror, studies
from ab.nn.stat.schema import Outbox
from ab.nn.stat.store import reclaim_lapsed
from ab.nn.util import system


@dataclass
class Report:
    findings: list = field(default_factory=list)  # studies.Finding and one-line strings
    checked: int = 0                                # studies compared

    @property
    def unrepaired(self) -> list:
        return [f for f in self.findings if not getattr(f, "repaired", False)]

    @property
    def ok(self) -> bool:
        return not self.unrepaired

    def lines(self) -> list[str]:
        out = [str(f) for f in self.findings]
        state = "agree" if not self.findings else (
            "agree after repair" if self.ok else f"disagree in {len(self.unrepaired)} place(s)")
        return out + [f"{self.checked} study(ies) checked: our tables and their copies {state}"]


@dataclass
class Note:
    """A finding outside any study (the mirror, trials outside studies)."""
    text: str
    repaired: bool = False

    def __str__(self) -> str:
        return self.text + (" (repaired)" if self.repaired else "")


def check(url: str, stat_dir: Path, *, repair: bool = False, config: str | None = None) -> Report:
    """Compare every study (of ``config``, if given) and this host's JSON mirror with our tables."""
    report = Report()
    storage = studies.storage(url)
    with studies.quiet():
        names = _study_names(url, storage, config)
        for name in names:
            report.findings += _defined(url, storage, name, repair)
            report.findings += studies.reconcile(url, storage, name, repair=repair)
            report.checked += 1
    with Session(engines.engine(url, writer=True)) as session, session.begin():  # trials outside studies
        for trial_id, reason in reclaim_lapsed(session, config=config, dry_run=not repair):
            report.findings.append(Note(f"trial {trial_id}: running, but {reason.removeprefix('interrupted: ')}",
                                        repair))
    report.findings += _mirror(url, stat_dir, repair)
    return report


def _study_names(url: str, storage, config: str | None) -> list[str]:
    with Session(engines.engine(url, writer=False)) as session:
        ours = set(session.scalars(select(studies.Study.name)))
    names = ours | set(optuna.get_all_study_names(storage=storage))
    return sorted(n for n in names if config is None or n.split("@", 1)[0] == config)


def _defined(url: str, storage, name: str, repair: bool) -> list:
    """A study made by an older version gets its definition inferred (and, with ``repair``, recorded)."""
    with Session(engines.engine(url, writer=False)) as session:
        if studies.definition(session, name) is not None:
            return []
        inferred = studies.infer(session, storage, name)
    if inferred is None:
        return [Note(f"{name}: study: Optuna holds it but our tables cannot tell what it optimises (no trial of "
                     f"ours names it, or unknown metric names); left alone")]
    if repair:
        with Session(engines.engine(url, writer=True)) as session, session.begin():
            studies.define(session, inferred)
    return [Note(f"{name}: study: made by an older version, recorded as optimising "
                 f"{','.join(inferred.objectives)}", repair)]


def _mirror(url: str, stat_dir: Path, repair: bool) -> list:
    host = system.host()
    findings = []
    if repair:
        for path in mirror.malformed_files(stat_dir):
            mirror.rewrite(url, stat_dir, path)
            findings.append(Note(f"JSON mirror: {path} did not parse; rewritten from the database", True))
        flushed = mirror.flush(url, stat_dir, host)
        if flushed.done:
            findings.append(Note(f"JSON mirror: {flushed.done} queued trial(s) written", True))
        findings += [Note(f"JSON mirror: {error} (still queued)") for error in flushed.errors]
        return findings
    with Session(engines.engine(url, writer=False)) as session:
        pending = session.scalar(select(func.count()).select_from(Outbox).where(
            Outbox.done_at.is_(None), Outbox.host == host))
    if pending:
        findings.append(Note(f"JSON mirror: {pending} finished trial(s) queued but not yet written to {stat_dir}"))
    findings += [Note(f"JSON mirror: {path} does not parse") for path in mirror.malformed_files(stat_dir)]
    return findings
