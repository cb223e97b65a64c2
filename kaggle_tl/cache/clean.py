"""``kaggle-tl clean``: what the cache holds, and removing what the user names or what is old."""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from pathlib import Path
from typing import Callable

from kaggle_tl.cache.store import Cache, Entry
from kaggle_tl.errors import KaggleTLError


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def select(entries: list[Entry], older_than_days: float | None = None, data: str | None = None,
           backbone: str | None = None, kind: str | None = None) -> list[Entry]:
    """The entries matching every given criterion (data and backbone: feature entries, from their meta.json)."""
    now = dt.datetime.now()
    chosen = []
    for entry in entries:
        info = entry.info
        if kind is not None and entry.kind != kind:
            continue
        if data is not None and info.get("data") != data:
            continue
        if backbone is not None and info.get("backbone") != backbone:
            continue
        if older_than_days is not None and (now - entry.last_used).total_seconds() < older_than_days * 86400:
            continue
        chosen.append(entry)
    return chosen


def clean(cache_dir: str | Path, older_than_days: float | None = None, data: str | None = None,
          backbone: str | None = None, kind: str | None = None, remove: bool = False,
          out: Callable[[str], None] = print) -> list[Entry]:
    """List the cache by (kind, data set, backbone); with criteria, the entries they select, removed if ``remove``.

    Returns the selected entries (all of them when no criterion is given; nothing is removed then).
    """
    if not Path(cache_dir).is_dir():
        raise KaggleTLError(f"{cache_dir}: cache folder not found")
    if older_than_days is not None and not 0 <= older_than_days < float("inf"):
        raise KaggleTLError(f"--older-than {older_than_days}: expected a number of days, 0 or more")
    entries = Cache(cache_dir).entries()
    criteria = any(v is not None for v in (older_than_days, data, backbone, kind))
    chosen = select(entries, older_than_days, data, backbone, kind) if criteria else entries
    groups: dict[tuple[str, str, str], list[Entry]] = defaultdict(list)
    for entry in chosen:
        info = entry.info
        groups[entry.kind, str(info.get("data", "-")), str(info.get("backbone", "-"))].append(entry)
    out(f"{'kind':<12} {'data set':<24} {'backbone':<24} {'entries':>7} {'size':>9}  last used")
    for (what, data_set, name), group in sorted(groups.items()):
        last = max(e.last_used for e in group).strftime("%Y-%m-%d %H:%M")
        out(f"{what:<12} {data_set[:24]:<24} {name[:24]:<24} {len(group):>7} {_size(sum(e.size for e in group)):>9}"
            f"  {last}")
    total = _size(sum(e.size for e in chosen))
    if not criteria:
        out(f"{len(chosen)} entries, {total} in {cache_dir}; select with --older-than, --data, --backbone or --kind "
            "to remove some")
        return chosen
    if not remove:
        out(f"would remove {len(chosen)} entries, {total}; add --yes to remove them")
        return chosen
    sizes = [entry.size for entry in chosen]
    done = [entry.remove() for entry in chosen]
    removed = [entry for entry, gone in zip(chosen, done) if gone]
    kept = [str(entry.path) for entry, gone in zip(chosen, done) if not gone]
    out(f"removed {len(removed)} entries, {_size(sum(n for n, gone in zip(sizes, done) if gone))}"
        + (f"; kept {len(kept)} that a running run holds ({', '.join(kept[:3])})" if kept else ""))
    return removed
