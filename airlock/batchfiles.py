"""``airlock submit --files-dir DIR``: each finished job's collected files, fetched into a
folder of its own below DIR, named after its batch item (``line-7``, ``plot.py``).

Fetched whole or not at all: into a hidden folder first, renamed into place once every file
is there and checked (airlock/downloads.py). A folder already there was fetched by an earlier
run of the same batch (resuming) and is left as it is.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from airlock.batch import BatchItem

if TYPE_CHECKING:
    from airlock.client import Airlock

UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def item_folder(item: BatchItem) -> str:
    """A folder name for the item: its source made safe (``line 7`` is ``line-7``)."""
    name = UNSAFE.sub("-", item.source).strip("-.")[:100]
    return name or f"item-{item.number}"


@dataclass(frozen=True, slots=True)
class Fetched:
    folder: Path | None  # where the job's files are (None: it kept none)
    problems: tuple[str, ...] = ()


def fetch(client: Airlock, job_id: str, item: BatchItem, files_dir: Path) -> Fetched:
    """The job's collected files into ``files_dir/<item folder>``, whole, or say why not."""
    rows = [r for r in client.files(job_id) if r.status == "collected"]
    if not rows:
        return Fetched(None)
    final = files_dir / item_folder(item)
    if final.exists():
        return Fetched(final)
    partial = files_dir / f".{final.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        saved = client.save_files(job_id, partial)
        problems = tuple(f"{s.local}: {s.problem}" for s in saved if s.problem)
        if problems:
            return Fetched(None, problems)
        os.rename(partial, final)
        return Fetched(final)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
