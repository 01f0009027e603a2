"""``airlock files``: the files a job collected, listed or downloaded."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path

import click

from airlock.cli_kit import client as _client
from airlock.records import JobRecord
from airlock.terminal import one_line
from base.errors import AirlockError
from tasks.output_rows import FileRow


def _line(row: FileRow) -> str:
    """One entry, as one printable line (the path is escaped text already: base/names.py)."""
    if row.status == "collected":
        return f"{row.size:>12} {row.mode or 0:04o} {(row.sha256 or '')[:12]}  {row.path}"
    return f"{'refused':>12} {'':4} {'':12}  {row.path}: {row.reason}"


def _footer(record: JobRecord) -> list[str]:
    files = record.files or {}
    lines = []
    if files.get("refusals_not_listed"):
        lines.append(f"{files['refusals_not_listed']} more refused (not listed)")
    for pattern in files.get("unmatched", []):
        lines.append(f"matched nothing: {pattern}")
    if files.get("stopped"):
        lines.append(str(files["stopped"]))
    return lines


@click.command()
@click.argument("job_id")
@click.option("--out", "out", type=click.Path(file_okay=False, path_type=Path),
              help="Download every collected file below this folder (never outside it).")
@click.option("--json", "as_json", is_flag=True, help="The manifest as JSON.")
def files(job_id: str, out: Path | None, as_json: bool) -> None:
    """List the files a job collected (size, mode, sha256, path; refusals with their reason),
    or download them with --out DIR.

    Exits 1 when a file could not be written (one already there is never overwritten)."""
    try:
        client = _client()
        record = client.result(job_id)
        rows = client.files(job_id)
        if as_json:
            click.echo(json.dumps({"job": record.id, "summary": record.files,
                                   "files": [asdict(r) for r in rows]}, indent=2))
            return
        if out is None:
            for row in rows:
                click.echo(one_line(_line(row)))
            for line in _footer(record):
                click.echo(one_line(f"airlock: {line}"), err=True)
            if not rows and not record.files:
                click.echo(one_line(f"airlock: job {record.id} collected no files"), err=True)
            return
        saved = client.save_files(job_id, out)
    except AirlockError as exc:
        raise click.ClickException(one_line(str(exc))) from exc
    failed = [s for s in saved if s.problem]
    for s in saved:
        click.echo(one_line(f"{s.local}: {s.problem}" if s.problem else s.local))
    click.echo(one_line(f"airlock: {len(saved) - len(failed)} files written below {out}"
                        + (f", {len(failed)} not written" if failed else "")), err=True)
    sys.exit(1 if failed else 0)
