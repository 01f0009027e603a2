"""What every ``airlock`` command shares: how it reads the settings and makes a client, its
option types, and how bad input is said (one line, exit 2)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import click

from base.errors import preview
from base.limits import LIMITS
from base.units import parse_size

EXIT_BAD_INPUT = 2
EXIT_AIRLOCK_FAILED = 125
F = TypeVar("F", bound=Callable[..., Any])


def settings() -> Any:
    from config.settings import load_settings

    return load_settings()


def client() -> Any:
    """The direct client, or the HTTP API's when AIRLOCK_API_URL and AIRLOCK_API_KEY are set."""
    from airlock.client import Airlock

    s = settings()
    if s.api.url and s.api.key is not None:
        return Airlock(s, url=s.api.url, api_key=s.api.key.get_secret_value())
    return Airlock(s)


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


