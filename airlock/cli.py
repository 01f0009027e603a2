"""The ``airlock`` command."""

from __future__ import annotations

import codecs
import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar, cast

import click

from airlock.terminal import Screen, one_line, visible
from base.errors import AirlockError, JobSpecError, preview
from base.limits import LIMITS
from base.units import parse_size

EXIT_AIRLOCK_FAILED = 125
F = TypeVar("F", bound=Callable[..., Any])


def _settings() -> Any:
    from config.settings import load_settings

    return load_settings()


def _client() -> Any:
    from airlock.client import Airlock

    return Airlock(_settings())


class Size(click.ParamType):  # type: ignore[type-arg]
    name = "size"

    def convert(self, value: Any, param: Any, ctx: Any) -> int:
        try:
            return value if isinstance(value, int) else parse_size(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


def limit_options(command: F) -> F:
    """One option per limit of base/limits.py (``--timeout``, ``--memory``, ...)."""
    for info in reversed(LIMITS):
        kind: Any = Size() if info.unit == "bytes" else info.kind
        unit = "a size: 512m, 4g or bytes" if info.unit == "bytes" else f"in {info.unit}"
        command = click.option(info.flag, info.name, type=kind,
                               help=f"{info.help[:-1]}, {unit}.")(command)
    return command


raw_option = click.option("--raw", is_flag=True,
                          help="The job's output exactly as it was written, also on a terminal"
                               " (escape sequences included: a job can then fake what you see).")


class BadInput(click.UsageError):
    """Bad input (an option, an argument, a job the contract refuses): one line, exit 2."""

    def show(self, file: Any = None) -> None:
        click.echo(f"airlock: {preview(self.format_message(), 400)}", err=True)


@contextmanager
def _one_line() -> Iterator[None]:
    try:
        yield
    except (BadInput, click.exceptions.NoArgsIsHelpError):
        raise
    except click.UsageError as exc:  # click's own show() adds the usage and a hint
        raise BadInput(exc.format_message()) from exc


class AirlockGroup(click.Group):
    """Every command's usage errors, said in one line (``BadInput``)."""

    def make_context(self, info_name: str | None, args: list[str],
                     parent: click.Context | None = None, **extra: Any) -> click.Context:
        with _one_line():
            return super().make_context(info_name, args, parent, **extra)

    def invoke(self, ctx: click.Context) -> Any:
        with _one_line():
            return super().invoke(ctx)


@click.group(cls=AirlockGroup)
def main() -> None:
    """Airlock runs untrusted code in fresh, hardened, throwaway containers."""
    from base.logs import setup_logging

    try:
        setup_logging(_settings().log_format)
    except Exception as exc:
        click.echo(f"airlock: settings: {exc}", err=True)
        sys.exit(2)


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{what} {path} is not valid UTF-8") from exc


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
        import base64

        spec["stdin_b64"] = base64.b64encode(opts["stdin_file"].read_bytes()).decode()
    limits = {info.name: opts[info.name] for info in LIMITS if opts.get(info.name) is not None}
    if limits:
        spec["limits"] = limits
    if opts.get("image"):
        spec["profile"] = opts["image"]
    if opts.get("network"):
        spec["network"] = opts["network"]
    if opts.get("env"):
        spec["env"] = opts["env"]
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


@main.command()
@click.option("-c", "code", help="Code to run (in the profile's language).")
@click.argument("script", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--argv", multiple=True, help="Run this command instead (repeat per argument).")
@click.option("--stdin", "stdin_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@limit_options
@click.option("--image", "--profile", "image", help="Image profile name (see settings).")
@click.option("--network", type=click.Choice(["none", "egress"]))
@click.option("--env", multiple=True, callback=_env_option, help="NAME=VALUE (non-secret).")
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
            _OutputRelay(output).run(client, handle.id)
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
    if record.verdict in ("error", None):
        sys.exit(EXIT_AIRLOCK_FAILED)
    sys.exit(record.exit_code if record.exit_code is not None else EXIT_AIRLOCK_FAILED)


def _utf8(stream: TextIO) -> bool:
    return codecs.lookup(getattr(stream, "encoding", None) or "ascii").name == "utf-8"


class Output:
    """Our stdout and stderr. A terminal is shown job bytes made visible (airlock/terminal.py)
    unless ``raw``; a pipe or a file gets them exactly. Airlock's own lines go to stderr.
    When both are terminals they are taken as one (the same one, nearly always)."""

    def __init__(self, raw: bool = False) -> None:
        streams = {"stdout": sys.stdout, "stderr": sys.stderr}
        self.binary = {kind: stream.buffer for kind, stream in streams.items()}
        self.ttys = {kind for kind, stream in streams.items() if stream.isatty()}
        self.raw = raw
        self.screen = Screen(ascii_only=not all(_utf8(streams[kind]) for kind in self.ttys))

    @property
    def on_terminal(self) -> bool:
        """Airlock's own lines go to a person's terminal."""
        return "stderr" in self.ttys

    def job(self, kind: str, data: bytes) -> None:
        """A chunk of the job's stdout or stderr."""
        if kind in self.ttys and self.raw:
            self.screen.passed(data)
        elif kind in self.ttys:
            data = self.screen.show(kind, data).encode("utf-8", "backslashreplace")
        self._write(kind, data)

    def say(self, text: str, *, interrupted: bool = False) -> None:
        """One of Airlock's own lines ("airlock: ..."); on a terminal it ends what the job's
        output held back (a partial UTF-8 sequence) and starts on a fresh line, marked."""
        if not self.raw:
            for kind in sorted(self.ttys):
                self._write(kind, self.screen.finish(kind).encode("utf-8", "backslashreplace"))
        if not self.on_terminal:
            click.echo(("\n" if interrupted else "") + one_line(text), err=True)
            return
        line = self.screen.own_line(text, interrupted=interrupted)
        self._write("stderr", line.encode("utf-8", "backslashreplace"))

    def _write(self, kind: str, data: bytes) -> None:
        if data:
            self.binary[kind].write(data)
            self.binary[kind].flush()


class _OutputRelay:
    """Writes a job's output events to an Output as they come; remembers the offset and
    whether the job's end was seen."""

    def __init__(self, output: Output, offset: str = "0-0") -> None:
        self.output = output
        self.offset = offset
        self.ended = False

    def run(self, client: Any, job_id: str, follow: bool = True) -> None:
        for event in client.events(job_id, self.offset, follow=follow):
            if event.kind in ("stdout", "stderr"):
                self.output.job(event.kind, event.data)
            elif event.kind == "lagging":
                skipped = sum(event.summary.values())
                self.output.say(f"airlock: live output fell behind: {skipped} bytes skipped here"
                                 " (the stored result has them once it ends)")
            elif event.kind == "truncated":
                self.output.say("airlock: live output stops here (its bound is reached);"
                                 " the job goes on")
            self.ended = event.kind == "end"
            self.offset = event.offset


@main.command()
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


@main.command()
@click.argument("job_id")
@click.option("--follow", "-f", is_flag=True, help="Keep following until the job ends.")
@click.option("--offset", default="0-0", help="Resume after this stream offset.")
@raw_option
def logs(job_id: str, follow: bool, offset: str, raw: bool) -> None:
    """Print a job's output (live with --follow), resumable from an offset.

    On a terminal, the job's verdict follows its output once it has ended. Interrupted, it
    prints the offset to resume from with --offset."""
    relay = _OutputRelay(Output(raw), offset)
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


@main.command()
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


@main.command()
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
def submit(source: Path, in_flight: int, out: Path | None, csv_path: Path | None, on_error: str,
           batch_id: str | None) -> None:
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


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", type=int, help="Jobs at once on this host.")
@click.pass_context
def worker(ctx: click.Context, concurrency: int | None) -> None:
    """Start a Celery worker bound to this host's Docker engine."""
    from tasks.worker import start_worker

    start_worker(_settings(), concurrency=concurrency, extra=list(ctx.args))


@main.command()
@click.option("--port", type=int, help="Port (default: AIRLOCK_FLOWER_PORT, 5555).")
@click.option("--address", help="Address to bind (default: AIRLOCK_FLOWER_ADDRESS, 127.0.0.1).")
def flower(port: int | None, address: str | None) -> None:
    """Start Flower for Airlock's workers (basic auth from AIRLOCK_FLOWER_USER/_PASSWORD)."""
    from tasks.dashboard import FlowerRefused, start_flower

    try:
        start_flower(_settings(), port, address)
    except FlowerRefused as exc:
        click.echo(f"airlock flower: refusing to start: {exc}", err=True)
        sys.exit(2)


@main.command()
@click.option("--allow-known-cve", "allowed", multiple=True, metavar="CVE-ID",
              help="Accept a known runc escape (warn instead of fail); see docs/operations.md.")
@click.option("--json", "as_json", is_flag=True, help="Print the checks as JSON.")
def doctor(allowed: tuple[str, ...], as_json: bool) -> None:
    """Check this host: engine, runc, cgroups, disk bound, seccomp, firewall, services."""
    from airlock.doctor import failed, run_checks

    checks = run_checks(_settings(), allowed)
    if as_json:
        click.echo(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        _print_checks(checks)
    sys.exit(1 if failed(checks) else 0)


def _print_checks(checks: list[Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    marks = {"ok": "[green]ok[/]", "warn": "[yellow]WARN[/]", "fail": "[bold red]FAIL[/]"}
    table = Table(title="airlock doctor", title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column, overflow="fold")
    for check in checks:
        table.add_row(check.name, marks[str(check.status)], check.detail)
    Console(width=max(100, Console().width)).print(table)


@main.command("dead-letters")
@click.option("--queue", help="Only this list: a queue's name, or 'unacked' (default: every list).")
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True,
              help="The newest items shown per list.")
@click.option("--json", "as_json", is_flag=True, help="Print the items as JSON (with their bytes).")
def dead_letters(queue: str | None, limit: int, as_json: bool) -> None:
    """Show what workers took off the broker and set aside: when, where, why, a preview.

    Every byte an item holds is shown escaped (\\xNN); --json adds the kept bytes in base64."""
    import redis

    from tasks import deadletters, streams

    try:
        r = streams.connect(_settings().broker_url)
        lists = {q: (r.llen(deadletters.dead_key(q)), deadletters.dead_letters(r, q, limit))
                 for q in ([queue] if queue else deadletters.dead_queues(r))}
    except redis.exceptions.RedisError as exc:
        raise click.ClickException(f"broker: {exc}") from exc
    if as_json:
        click.echo(json.dumps([{"queue": q, "count": count, "items": [
            item.as_dict() if item else None for item in items]}
            for q, (count, items) in lists.items()], indent=2))
        return
    for q, (count, items) in lists.items():
        click.echo(f"{deadletters.printable(q)}: {count} set aside, newest first")
        for item in items:
            click.echo(f"  {item.describe()}" if item else "  (not an entry of Airlock's)")


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
def db_upgrade() -> None:
    """Apply the migrations to the configured database."""
    from tasks.migrate import upgrade

    upgrade(_settings().database_url)
    click.echo("database is at the latest migration")


if __name__ == "__main__":
    main()
