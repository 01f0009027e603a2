"""fair share, quotas and usage: tenants' weights and quotas, jobs' admission, submission
counts per minute, and usage per tenant and day (kept by a trigger on each job's end)

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

# A job's end, counted once: the row turns 'finished' exactly once (every path that ends a
# job is an UPDATE of status), so usage is added in the same transaction as the result.
USAGE_FUNCTION = """
CREATE FUNCTION airlock_count_usage() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO usage_days AS u (tenant, day, verdict, jobs, cpu_ms, wall_ms,
                                 peak_memory_byte_s)
    VALUES (NEW.tenant, (coalesce(NEW.finished_at, now()) AT TIME ZONE 'UTC')::date,
            coalesce(NEW.verdict, 'none'), 1, coalesce(NEW.cpu_ms, 0), coalesce(NEW.wall_ms, 0),
            coalesce(NEW.peak_memory_bytes, 0)::double precision
                * coalesce(NEW.wall_ms, 0) / 1000.0)
    ON CONFLICT (tenant, day, verdict) DO UPDATE SET
        jobs = u.jobs + 1, cpu_ms = u.cpu_ms + EXCLUDED.cpu_ms,
        wall_ms = u.wall_ms + EXCLUDED.wall_ms,
        peak_memory_byte_s = u.peak_memory_byte_s + EXCLUDED.peak_memory_byte_s;
    RETURN NULL;
END $$;
"""
USAGE_TRIGGER = """
CREATE TRIGGER jobs_count_usage AFTER UPDATE OF status ON jobs
FOR EACH ROW WHEN (OLD.status <> 'finished' AND NEW.status = 'finished')
EXECUTE FUNCTION airlock_count_usage();
"""


def upgrade() -> None:
    op.add_column('tenants', sa.Column('weight', sa.Float(), nullable=False, server_default='1'))
    for name in ('max_in_flight', 'max_queued', 'submissions_per_min', 'cpu_s_per_day'):
        op.add_column('tenants', sa.Column(name, sa.Integer()))
    op.add_column('tenants', sa.Column('max_limits', JSONB(), nullable=False,
                                       server_default=sa.text("'{}'::jsonb")))
    op.create_check_constraint('ck_tenants_weight', 'tenants', 'weight > 0')

    # Admitted: given a place in the fleet's queue (fair share, tasks/admission.py). Jobs
    # queued before this migration were sent already: admitted when they were queued.
    op.add_column('jobs', sa.Column('admitted_at', sa.DateTime(timezone=True)))
    op.execute("UPDATE jobs SET admitted_at = queued_at WHERE status <> 'finished'")
    op.create_index('ix_jobs_waiting', 'jobs', ['tenant', 'queued_at', 'id'],
                    postgresql_where=sa.text("status = 'queued' AND admitted_at IS NULL"))
    op.create_index('ix_jobs_in_flight', 'jobs', ['tenant'],
                    postgresql_where=sa.text(
                        "status = 'running' OR (status = 'queued' AND admitted_at IS NOT NULL)"))

    op.create_table(
        'submission_counts',
        sa.Column('tenant', sa.String(64), sa.ForeignKey('tenants.name'), primary_key=True),
        sa.Column('minute', sa.DateTime(timezone=True), primary_key=True),
        sa.Column('n', sa.Integer(), nullable=False),
    )
    op.create_table(
        'usage_days',
        sa.Column('tenant', sa.String(64), sa.ForeignKey('tenants.name'), primary_key=True),
        sa.Column('day', sa.Date(), primary_key=True),
        sa.Column('verdict', sa.String(32), primary_key=True),
        sa.Column('jobs', sa.Integer(), nullable=False),
        sa.Column('cpu_ms', sa.BigInteger(), nullable=False),
        sa.Column('wall_ms', sa.BigInteger(), nullable=False),
        sa.Column('peak_memory_byte_s', sa.Float(), nullable=False),
        sa.Column('egress_bytes', sa.BigInteger(), nullable=False, server_default='0'),
    )
    op.execute(USAGE_FUNCTION)
    op.execute(USAGE_TRIGGER)


def downgrade() -> None:
    op.execute("DROP TRIGGER jobs_count_usage ON jobs")
    op.execute("DROP FUNCTION airlock_count_usage()")
    op.drop_table('usage_days')
    op.drop_table('submission_counts')
    op.drop_index('ix_jobs_in_flight', 'jobs')
    op.drop_index('ix_jobs_waiting', 'jobs')
    op.drop_column('jobs', 'admitted_at')
    op.drop_constraint('ck_tenants_weight', 'tenants')
    for name in ('max_limits', 'cpu_s_per_day', 'submissions_per_min', 'max_queued',
                 'max_in_flight', 'weight'):
        op.drop_column('tenants', name)
