"""Batch submission: many jobs from one JSON Lines file or a folder of scripts.

Pure part: ``load`` turns the input into ``BatchItem`` values, each a valid job spec with an
idempotency key derived from the batch, or an error naming its line. I/O part: ``BatchRunner``
submits them with a bound on jobs in flight and hands every result to a callback.

Keys: ``batch:<sha256(scope, item, content)>`` where the scope is ``--batch-id`` or else the
input's absolute path, the item is the line number (or the file name), and the content is that
line's bytes (or the script's). Re-running the same input submits the same keys: jobs that
finished are fetched, jobs still queued or running are waited for, nothing runs twice. Editing
one line gives that line a new key (it runs again) and leaves the others alone. A line that sets
its own ``idempotency_key`` keeps it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal

from airlock.records import JobRecord
from base.errors import AirlockError, JobSpecError
from config.settings import Settings
from tasks.contract import resolve

if TYPE_CHECKING:
    from airlock.client import Airlock

SCRIPT_PROFILES = {".py": "python", ".js": "node", ".sh": "shell", ".c": "c"}
OnError = Literal["skip", "stop"]
INVALID = "invalid"
CSV_FIELDS = ("item", "source", "id", "status", "verdict", "exit_code", "signal", "wall_ms",
              "cpu_ms", "peak_memory_bytes", "attempt", "stdout_total_bytes",
              "stderr_total_bytes", "stdout_truncated", "stderr_truncated", "reused",
              "idempotency_key", "error", "stdout", "stderr")


@dataclass(frozen=True, slots=True)
class BatchItem:
    number: int  # the line number (1-based), or the file's place in the folder
    source: str  # "line 7" or the file name
    spec: dict[str, Any] | None
    error: str | None = None

    @property
    def valid(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Batch:
    scope: str
    kind: Literal["lines", "folder"]
    items: tuple[BatchItem, ...]
    ignored: tuple[str, ...] = ()  # files of a folder that are not scripts

    @property
    def valid(self) -> list[BatchItem]:
        return [i for i in self.items if i.valid]

    @property
    def invalid(self) -> list[BatchItem]:
        return [i for i in self.items if not i.valid]

    def to_submit(self, on_error: OnError) -> list[BatchItem]:
        """The items to run: every valid one, or with ``stop`` those before the first error."""
        out = []
        for item in self.items:
            if not item.valid:
                if on_error == "stop":
                    break
                continue
            out.append(item)
        return out


def item_key(scope: str, item: str, content: bytes) -> str:
    digest = hashlib.sha256()
    for part in (scope.encode(), item.encode(), content):
        digest.update(len(part).to_bytes(8, "big") + part)
    return f"batch:{digest.hexdigest()[:40]}"


def _checked(spec: Any, s: Settings) -> str | None:
    """None when ``spec`` is a job the fleet accepts, else why not."""
    if not isinstance(spec, dict):
        return f"a job must be a JSON object, not {type(spec).__name__}"
    try:
        resolve(spec, s)
    except JobSpecError as exc:
        return str(exc)
    return None


def _decoded(line: bytes) -> tuple[Any, str | None]:
    """The line's JSON value, or None and why it has none."""
    try:
        return json.loads(line.decode("utf-8")), None
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except json.JSONDecodeError as exc:
        return None, f"not JSON: {exc.msg} at column {exc.colno}"
    except (ValueError, RecursionError):  # a number of 5,000 digits; arrays nested 10,000 deep
        return None, "not JSON this program reads: a number too long or nesting too deep"


def parse_lines(data: bytes, scope: str, s: Settings) -> list[BatchItem]:
    """JSON Lines: one job spec per line, the API's fields. Blank lines and lines starting
    with ``#`` are not jobs; anything else that is not a valid job is an error item."""
    items = []
    for number, raw in enumerate(data.split(b"\n"), 1):
        line = raw.strip()
        if not line or line.startswith(b"#"):
            continue
        source = f"line {number}"
        spec, error = _decoded(line)
        error = error or _checked(spec, s)
        if error is None:
            spec.setdefault("idempotency_key", item_key(scope, f"line {number}", line))
            items.append(BatchItem(number, source, spec))
        else:
            items.append(BatchItem(number, source, None, error))
    return items


def parse_folder(files: list[tuple[str, bytes]], scope: str,
                 s: Settings) -> tuple[list[BatchItem], list[str]]:
    """Scripts, one job each, the profile from the extension; other files are ignored."""
    items, ignored = [], []
    number = 0
    for name, content in sorted(files):
        profile = SCRIPT_PROFILES.get(Path(name).suffix.lower())
        if profile is None:
            ignored.append(name)
            continue
        number += 1
        try:
            code = content.decode("utf-8")
        except UnicodeDecodeError:
            items.append(BatchItem(number, name, None, "not valid UTF-8"))
            continue
        spec: dict[str, Any] = {"code": code, "profile": profile, "label": name[:200],
                                "idempotency_key": item_key(scope, name, content)}
        error = _checked(spec, s)
        items.append(BatchItem(number, name, spec if error is None else None, error))
    return items, ignored


def load(path: Path, s: Settings, batch_id: str | None = None) -> Batch:
    """Read a JSON Lines file or a folder of scripts (top level only; links not followed)."""
    scope = batch_id or str(path.resolve())
    if path.is_dir():
        files = [(p.name, p.read_bytes()) for p in path.iterdir()
                 if p.is_file() and not p.is_symlink()]
        items, ignored = parse_folder(files, scope, s)
        return Batch(scope, "folder", tuple(items), tuple(ignored))
    return Batch(scope, "lines", tuple(parse_lines(path.read_bytes(), scope, s)))


# The I/O part -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ItemResult:
    item: BatchItem
    record: JobRecord
    reused: bool  # it had finished before this run: fetched, not run
    files_dir: str | None = None  # where its collected files were fetched (--files-dir)

    def to_json(self) -> dict[str, Any]:
        extra = {"files_dir": self.files_dir} if self.files_dir is not None else {}
        return {"item": self.item.number, "source": self.item.source, "reused": self.reused,
                **self.record.to_json(), **extra}


@dataclass
class BatchReport:
    total_lines: int
    to_run: int
    verdicts: Counter[str] = field(default_factory=Counter)
    submitted: int = 0  # new jobs this run
    reused: int = 0  # finished before this run
    resumed: int = 0  # queued or running before this run, waited for
    invalid: list[BatchItem] = field(default_factory=list)
    stopped_at: BatchItem | None = None
    wall_s: float = 0.0
    walls_ms: dict[str, list[int]] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return sum(self.verdicts.values())


class BatchRunner:
    """Submit a batch's items, at most ``in_flight`` unfinished at once; report each result."""

    def __init__(self, client: Airlock, batch: Batch, *, in_flight: int = 16,
                 on_error: OnError = "skip",
                 on_result: Callable[[ItemResult], None] = lambda r: None,
                 on_invalid: Callable[[BatchItem], None] = lambda i: None,
                 poll_s: float = 1.0) -> None:
        if in_flight < 1:
            raise AirlockError("in_flight must be at least 1")
        self.client, self.batch = client, batch
        self.in_flight, self.on_error, self.poll_s = in_flight, on_error, poll_s
        self.on_result, self.on_invalid = on_result, on_invalid

    def run(self) -> BatchReport:
        t0 = time.monotonic()
        todo = self.batch.to_submit(self.on_error)
        report = BatchReport(total_lines=len(self.batch.items), to_run=len(todo))
        bad = self.batch.invalid[:1] if self.on_error == "stop" else self.batch.invalid
        for item in bad:
            report.invalid.append(item)
            self.on_invalid(item)
        if self.on_error == "stop" and bad:
            report.stopped_at = bad[0]
        pending = deque(todo)
        flying: dict[str, tuple[BatchItem, bool]] = {}
        while pending or flying:
            while pending and len(flying) < self.in_flight:
                item = pending.popleft()
                assert item.spec is not None
                handle = self.client.submit(item.spec)
                if handle.created:
                    report.submitted += 1
                    flying[handle.id] = (item, False)
                    continue
                record = self.client.result(handle.id)
                if record.done:
                    self._emit(report, ItemResult(item, record, True))
                    continue
                report.resumed += 1
                self._requeue_if_lost(handle.id, record)
                flying[handle.id] = (item, True)
            if flying:
                for job_id in self._wait_any(list(flying)):
                    item, _ = flying.pop(job_id)
                    self._emit(report, ItemResult(item, self.client.result(job_id), False))
        report.wall_s = time.monotonic() - t0
        return report

    def _emit(self, report: BatchReport, result: ItemResult) -> None:
        verdict = result.record.verdict or "error"
        report.verdicts[verdict] += 1
        report.reused += result.reused
        if result.record.wall_ms is not None:
            report.walls_ms.setdefault(verdict, []).append(result.record.wall_ms)
        self.on_result(result)

    def _wait_any(self, job_ids: list[str]) -> list[str]:
        """Ids among ``job_ids`` that have finished, waiting up to ``poll_s`` for one."""
        return self.client.finished_among(job_ids, self.poll_s)

    def _requeue_if_lost(self, job_id: str, record: JobRecord) -> None:
        """A job still queued from an interrupted run may have lost its message (killed between
        the row and the send): send it again. A duplicate message is harmless (the claim is a
        compare-and-set; the second delivery is refused); this saves the reconciler's delay."""
        if record.status == "queued":
            self.client.resend(job_id)


# Output files ---------------------------------------------------------------------------------


class ResultsWriter:
    """Results as JSON Lines (and CSV), one row per job, flushed as they come (in completion
    order; ``item`` and ``source`` say which line or file each row is)."""

    def __init__(self, jsonl: Path | None, csv_path: Path | None = None) -> None:
        self._jsonl: IO[str] | None = jsonl.open("w", encoding="utf-8") if jsonl else None
        self._csv_file: IO[str] | None = None
        self._csv: csv.DictWriter[str] | None = None
        if csv_path is not None:
            self._csv_file = csv_path.open("w", newline="", encoding="utf-8")
            self._csv = csv.DictWriter(self._csv_file, fieldnames=CSV_FIELDS)
            self._csv.writeheader()
        self.count = 0

    def write(self, result: ItemResult) -> None:
        self.count += 1
        row = result.to_json()
        if self._jsonl is not None:
            self._jsonl.write(json.dumps(row) + "\n")
            self._jsonl.flush()
        if self._csv is not None and self._csv_file is not None:
            self._csv.writerow(csv_row(row))
            self._csv_file.flush()

    def close(self) -> None:
        for f in (self._jsonl, self._csv_file):
            if f is not None:
                f.close()


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    return {k: row.get(k) for k in CSV_FIELDS}
