"""``airlock run``, ``result``, ``logs``, ``cancel`` and ``submit``: jobs, as a person or a
script uses them."""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Any, cast

import click

from airlock.cli_kit import EXIT_AIRLOCK_FAILED, BadInput, limit_options, raw_option
from airlock.cli_kit import client as _client
from airlock.output import Output, OutputRelay
from airlock.terminal import one_line, visible
from base.errors import AirlockError, JobSpecError, preview
from base.limits import LIMITS


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{what} {path} is not valid UTF-8") from exc


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def build_spec(code: str | None, script: Path | None, argv: tuple[str, ...],
               **opts: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {}
    if code is not None and script is not None:
        raise click.UsageError("give -c CODE or a script file, not both")
    if script is not None:
        spec["code"] = _read_text(script, "script")
    elif code is not None:
        spec["code"] = code
    if argv:
        spec["argv"] = list(argv)
    if "code" not in spec and "argv" not in spec:
        raise click.UsageError("nothing to run: give -c CODE, a script file, or --argv")
    if opts.get("stdin_file") is not None:
        spec["stdin_b64"] = _b64(opts["stdin_file"])
    if opts.get("files"):
        spec["files_b64"] = {name: _b64(path) for name, path in opts["files"].items()}
    if opts.get("archive") is not None:
        spec["archive_b64"] = _b64(opts["archive"])
    if opts.get("collect"):
        spec["collect"] = list(opts["collect"])
    limits = {info.name: opts[info.name] for info in LIMITS if opts.get(info.name) is not None}
    if limits:
        spec["limits"] = limits
    if opts.get("image"):
        spec["profile"] = opts["image"]
    if opts.get("network"):
        spec["network"] = opts["network"]
    if opts.get("env"):
        spec["env"] = opts["env"]
    if opts.get("secrets"):
        spec["secrets"] = list(opts["secrets"])
    if opts.get("key"):
        spec["idempotency_key"] = opts["key"]
    return spec


def _env_option(ctx: click.Context, param: click.Parameter, items: tuple[str, ...]) -> dict[str, str]:
    env = {}
    for item in items:
        name, equals, value = item.partition("=")
        if not equals:
            raise click.BadParameter(f"'{preview(item)}' is not NAME=VALUE", ctx, param)
        env[name] = value
    return env


def _file_option(ctx: click.Context, param: click.Parameter,
                 items: tuple[str, ...]) -> dict[str, Path]:
    """``PATH`` (named as its base name in /workspace) or ``NAME=PATH``."""
    files: dict[str, Path] = {}
    for item in items:
        name, equals, path = item.rpartition("=")
        local = Path(path)
        if not local.is_file():
            raise click.BadParameter(f"'{preview(path)}' is not a file", ctx, param)
        files[name if equals else local.name] = local
    return files


@click.command()
@click.option("-c", "code", help="Code to run (in the profile's language).")
@click.argument("script", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--argv", multiple=True, help="Run this command instead (repeat per argument).")
@click.option("--stdin", "stdin_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--file", "files", multiple=True, callback=_file_option, metavar="[NAME=]PATH",
              help="A file for /workspace (repeatable), named NAME there or as PATH's base name.")
@click.option("--archive", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A tar archive (or .tar.gz) unpacked into /workspace.")
@click.option("--collect", multiple=True, metavar="GLOB",
              help="Keep these files once the job has ended (repeatable; globs under "
                   "/workspace, e.g. 'out/**'); then: airlock files ID --out DIR.")
@limit_options
@click.option("--image", "--profile", "image", help="Image profile name (see settings).")
@click.option("--network", type=click.Choice(["none", "egress"]))
@click.option("--env", multiple=True, callback=_env_option, help="NAME=VALUE (non-secret).")
@click.option("--secret", "secrets", multiple=True, metavar="NAME",
              help="A secret of the tenant's (airlock secret set) in the job's environment.")
@click.option("--key", help="Idempotency key.")
@click.option("--json", "as_json", is_flag=True, help="Print the result record as JSON.")
@raw_option
@click.option("--wait-timeout", type=float, default=None)
def run(code: str | None, script: Path | None, argv: tuple[str, ...], as_json: bool, raw: bool,
        wait_timeout: float | None, **opts: Any) -> None:
    """Run code in a sandbox, show its output live, exit with its exit code.

    Exits 2 for bad input (nothing was stored or queued), 125 when Airlock itself failed."""
    spec = build_spec(code, script, argv, **opts)
    client = _client()
    output = Output(raw)
    try:
        handle = client.submit(spec)
        if not as_json:
            OutputRelay(output).run(client, handle.id)
        record = client.wait(handle.id, wait_timeout)
    except JobSpecError as exc:
        raise BadInput(str(exc)) from exc
    except AirlockError as exc:
        output.say(f"airlock: {exc}")
        sys.exit(EXIT_AIRLOCK_FAILED)
    if as_json:
        click.echo(json.dumps(record.to_json(), indent=2))
        sys.exit(EXIT_AIRLOCK_FAILED if record.verdict == "error" else 0)
    output.say(record.summary())
    note = record.files_note()
    if note is not None:
        output.say(note)
    if record.verdict in ("error", None):
        sys.exit(EXIT_AIRLOCK_FAILED)
    sys.exit(record.exit_code if record.exit_code is not None else EXIT_AIRLOCK_FAILED)


@click.command()
@click.argument("job_id")
@click.option("--json", "as_json", is_flag=True)
@raw_option
def result(job_id: str, as_json: bool, raw: bool) -> None:
    """Show a job's stored result."""
    try:
        client = _client()
        record = client.result(job_id)
        if as_json:
            click.echo(json.dumps(record.to_json(), indent=2))
            return
        output = Output(raw)
        for stream in ("stdout", "stderr"):  # whole, as PostgreSQL keeps it
            for chunk in client.output(job_id, stream):
                output.job(stream, chunk)
    except AirlockError as exc:
        raise click.ClickException(visible(str(exc))) from exc
    output.say(record.summary())
    note = record.files_note()
    if note is not None:
        output.say(note)


@click.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep following until the job ends.")
@click.option("--offset", default="0-0", help="Resume after this stream offset.")
@raw_option
def logs(job_id: str, follow: bool, offset: str, raw: bool) -> None:
    """Print a job's output (live with --follow), resumable from an offset.

    On a terminal, the job's verdict follows its output once it has ended. Interrupted, it
    prints the offset to resume from with --offset."""
    relay = OutputRelay(Output(raw), offset)
    try:
        client = _client()
        relay.run(client, job_id, follow=follow)
        if relay.ended and relay.output.on_terminal:  # a pipe gets the job's bytes alone
            relay.output.say(client.result(job_id).summary())
    except AirlockError as exc:
        raise click.ClickException(visible(str(exc))) from exc
    except KeyboardInterrupt:
        relay.output.say(f"airlock: stopped; resume with --offset {relay.offset}", interrupted=True)
        sys.exit(130)


@click.command()
@click.argument("job_id")
@click.option("--wait", "wait_s", type=float, default=None, metavar="SECONDS",
              help="Then wait up to this long for the job's verdict and print it.")
def cancel(job_id: str, wait_s: float | None) -> None:
    """Cancel a job: a queued one never starts; a running one is killed.

    Exits 0 also when the job had already finished (nothing to do); non-zero for an unknown id."""
    client = _client()
    try:
        state = client.cancel(job_id)
        messages = {
            "cancelled": "cancelled before it started",
            "cancelling": "cancelling: its container is being killed",
            "already_finished": "already finished: nothing to cancel",
        }
        click.echo(f"{job_id}: {messages[state]}")
        if wait_s is not None:
            click.echo(one_line(client.wait(job_id, wait_s).summary()))
    except AirlockError as exc:
        raise click.ClickException(visible(str(exc))) from exc


@click.command()
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@click.option("--in-flight", type=click.IntRange(1, 10_000), default=16, show_default=True,
              help="Jobs submitted but not finished, at most.")
@click.option("--out", "out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every result as JSON Lines (one per job, as they finish).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the results as CSV.")
@click.option("--on-error", type=click.Choice(["skip", "stop"]), default="skip", show_default=True,
              help="A malformed line: report it and go on, or stop submitting there.")
@click.option("--batch-id", help="Scope of the idempotency keys (default: the input's path).")
@click.option("--files-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Fetch each job's collected files into a folder of its own below this one.")
def submit(source: Path, in_flight: int, out: Path | None, csv_path: Path | None, on_error: str,
           batch_id: str | None, files_dir: Path | None) -> None:
    """Run a batch: SOURCE is JSON Lines (one job per line, the API's fields) or a folder of
    scripts (.py .js .sh .c). Re-running it after an interruption runs nothing twice.

    Exits 0 when every line ran, 1 when lines were malformed, 125 when Airlock failed."""
    from rich.console import Console

    from airlock.batch import BatchRunner, ItemResult, OnError, ResultsWriter, load
    from airlock.batchview import BatchProgress, summary_table

    err = Console(stderr=True)
    client = _client()
    mode = cast(OnError, on_error)
    batch = load(source, client.settings, batch_id)
    todo = batch.to_submit(mode)
    writer = ResultsWriter(out, csv_path)
    try:
        with BatchProgress(err, len(todo), f"{source.name}: {len(todo)} jobs") as view:

            def on_result(result: ItemResult) -> None:
                if files_dir is not None:
                    result = _with_files(client, result, files_dir, err)
                writer.write(result)
                view.on_result(result)

            report = BatchRunner(client, batch, in_flight=in_flight, on_error=mode,
                                 on_result=on_result, on_invalid=view.on_invalid).run()
    except AirlockError as exc:
        err.print(f"airlock: {exc}; re-run the same command to resume")
        sys.exit(EXIT_AIRLOCK_FAILED)
    except KeyboardInterrupt:
        err.print("airlock: interrupted; re-run the same command to resume"
                  " (finished jobs are fetched, not run again)")
        sys.exit(130)
    finally:
        writer.close()
    Console().print(summary_table(report, f"batch {source.name}"))
    notes = [f"{report.submitted} submitted", f"{report.reused} finished earlier (fetched)",
             f"{report.resumed} from an earlier run (waited for)"]
    if batch.ignored:
        notes.append(f"{len(batch.ignored)} files ignored (not .py/.js/.sh/.c)")
    if out is not None:
        notes.append(f"results: {out}" + (f", {csv_path}" if csv_path else ""))
    err.print(" · ".join(notes))
    if report.stopped_at is not None:
        err.print(f"stopped at {report.stopped_at.source} (--on-error stop);"
                  f" {len(batch.items) - len(todo) - 1} lines after it not submitted")
    sys.exit(1 if report.invalid else 0)


def _with_files(client: Any, result: Any, files_dir: Path, err: Any) -> Any:
    """The result, its job's collected files fetched below ``files_dir`` (a failure is said,
    and the batch goes on: re-running it fetches what is missing)."""
    from dataclasses import replace

    from airlock.batchfiles import fetch

    files_dir.mkdir(parents=True, exist_ok=True)
    fetched = fetch(client, result.record.id, result.item, files_dir)
    for problem in fetched.problems:
        err.print(f"airlock: {one_line(result.item.source)}: files not fetched: {one_line(problem)}",
                  markup=False, highlight=False)
    return replace(result, files_dir=str(fetched.folder) if fetched.folder else None)
