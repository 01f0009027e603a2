"""tenant egress: each tenant's own endpoints (airlock tenant set-egress), reachable by its
jobs only, beside the fleet's common allowlist (docs/network.md); each job's egress bytes,
counted into its tenant's usage as it ends

Revision ID: 0009
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import ARRAY

revision = '0009'
down_revision = '0005'
branch_labels = None
depends_on = None


# 0008's function, with the job's egress bytes added to its tenant's day.
USAGE_FUNCTION = """
CREATE OR REPLACE FUNCTION airlock_count_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_days AS u (tenant, day, verdict, jobs, cpu_ms, wall_ms,
                                 peak_memory_byte_s, egress_bytes)
    VALUES (NEW.tenant, (coalesce(NEW.finished_at, now()) AT TIME ZONE 'UTC')::date,
            coalesce(NEW.verdict, 'none'), 1, coalesce(NEW.cpu_ms, 0), coalesce(NEW.wall_ms, 0),
            coalesce(NEW.peak_memory_bytes, 0)::double precision
                * coalesce(NEW.wall_ms, 0) / 1000.0, coalesce(NEW.egress_bytes, 0))
    ON CONFLICT (tenant, day, verdict) DO UPDATE SET
        jobs = u.jobs + 1, cpu_ms = u.cpu_ms + EXCLUDED.cpu_ms,
        wall_ms = u.wall_ms + EXCLUDED.wall_ms,
        peak_memory_byte_s = u.peak_memory_byte_s + EXCLUDED.peak_memory_byte_s,
        egress_bytes = u.egress_bytes + EXCLUDED.egress_bytes;
    RETURN NULL;
END $$;
"""


def upgrade() -> None:
    op.add_column('tenants', sa.Column('egress_domains', ARRAY(sa.String(length=253)),
                                       nullable=False, server_default=sa.text("'{}'")))
    op.add_column('jobs', sa.Column('egress_bytes', sa.BigInteger(), nullable=True))
    op.execute(USAGE_FUNCTION)


def downgrade() -> None:
    from importlib import import_module

    before = import_module('tasks.migrations.versions.0008_fair_share_quotas_usage')
    op.execute(before.USAGE_FUNCTION.replace('CREATE FUNCTION', 'CREATE OR REPLACE FUNCTION'))
    op.drop_column('jobs', 'egress_bytes')
    op.drop_column('tenants', 'egress_domains')
