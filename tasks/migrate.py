"""Schema migrations, run by ``airlock db upgrade`` (alembic, scripts in tasks/migrations)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine

SCRIPTS = Path(__file__).with_name("migrations")


def alembic_config(url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(SCRIPTS))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)


@cache
def head_revision() -> str | None:
    """This code's newest migration."""
    return ScriptDirectory.from_config(alembic_config("postgresql://")).get_current_head()


def current_and_head(url: str) -> tuple[str | None, str | None]:
    head = head_revision()
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return current, head


def known_revision(url: str, revision: str | None) -> bool:
    """Whether this code's migrations include ``revision`` (None, an empty schema, is known)."""
    if revision is None:
        return True
    script = ScriptDirectory.from_config(alembic_config(url))
    return revision in {r.revision for r in script.walk_revisions()}
