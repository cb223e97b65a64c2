"""Finding runs: every run in a runs folder, the one a user names, and those of one data set and settings."""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from kaggle_tl.errors import KaggleTLError
from kaggle_tl.runs.record import RECORD_FILE, RunRecord


def oldest_first(records: Iterable[RunRecord]) -> list[RunRecord]:
    """Runs in the order they were made: "the newest run" everywhere is the last of these."""
    return sorted(records, key=lambda r: (r.created, r.run_id))


def list_runs(runs_dir: str | Path) -> tuple[list[RunRecord], list[str]]:
    """Every readable run under ``runs_dir`` oldest first, and one line for each that is not.

    A folder without record.json is a run still in progress (or killed before its first
    record) and is passed over quietly; a damaged record is named.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        return [], []
    records, problems = [], []
    for path in sorted(runs_dir.glob(f"*/{RECORD_FILE}")):
        try:
            records.append(RunRecord.load(path.parent))
        except KaggleTLError as exc:
            problems.append(f"left out: {exc}")
    return oldest_first(records), problems


def chosen_run(run: str | Path | None, runs_dir: str | Path) -> RunRecord:
    """The run ``run`` names (an id under ``runs_dir`` or a folder), or the newest one in ``runs_dir``."""
    if run:
        return RunRecord.load(resolve_run_dir(run, runs_dir))
    records, _ = list_runs(runs_dir)
    if not records:
        raise KaggleTLError(f"{runs_dir}: no finished run; `kaggle-tl run` makes one (or pass --run / --runs-dir)")
    return records[-1]


def resolve_run_dir(run: str | Path, runs_dir: str | Path) -> Path:
    """A run folder from a run id (under ``runs_dir``) or a path to the folder itself."""
    for candidate in (Path(runs_dir) / str(run), Path(run)):
        if (candidate / RECORD_FILE).is_file():
            return candidate
    raise KaggleTLError(f"{run}: no run with that id in {runs_dir}/ and not a run folder (no {RECORD_FILE}); "
                        f"`kaggle-tl leaderboard --runs-dir {runs_dir}` lists the runs")


def select_runs(records: list[RunRecord], data: str | Path | None = None,
                fingerprint: str | None = None) -> tuple[list[RunRecord], list[str]]:
    """The runs of one data set: filtered by competition folder and/or fingerprint (a prefix will do).

    Runs on different data are never mixed: when the filter leaves several data fingerprints
    (no filter, or the folder's images changed between runs), the newest run's is kept and
    each other one is named in the returned notes.
    """
    if data is not None:
        folder = str(Path(data).resolve())
        records = [r for r in records if r.competition == folder]
    if fingerprint:
        records = [r for r in records if r.data_fingerprint.startswith(fingerprint)]
    if not records:
        return [], []
    newest = oldest_first(records)[-1].data_fingerprint
    notes = []
    for other in sorted({r.data_fingerprint for r in records} - {newest}):
        others = [r for r in records if r.data_fingerprint == other]
        notes.append(f"{len(others)} run(s) on other data not shown: fingerprint {other} "
                     f"({others[-1].competition}); select them with --fingerprint {other}")
    return [r for r in records if r.data_fingerprint == newest], notes


def with_models(records: list[RunRecord]) -> tuple[list[RunRecord], list[str]]:
    """The runs holding at least one finished model, and a note naming the others."""
    kept = [r for r in records if r.models]
    empty = [r.run_id for r in records if not r.models]
    return kept, ([f"{len(empty)} run(s) without a finished model left out ({', '.join(empty[:5])})"] if empty else [])
