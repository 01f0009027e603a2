"""tenants; every job belongs to one (existing jobs to the default tenant)

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'tenants',
        sa.Column('name', sa.String(length=64), primary_key=True),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
    )
    op.execute("INSERT INTO tenants (name) VALUES ('default')")
    op.add_column('jobs', sa.Column('tenant', sa.String(length=64), nullable=False,
                                    server_default='default'))
    op.create_foreign_key('fk_jobs_tenant', 'jobs', 'tenants', ['tenant'], ['name'])
    op.create_index('ix_jobs_tenant_queued_at', 'jobs', ['tenant', 'queued_at'])
    # An idempotency key is its tenant's: another tenant's same key is another job.
    op.drop_constraint('jobs_idempotency_key_key', 'jobs')
    op.create_unique_constraint('uq_jobs_tenant_idempotency_key', 'jobs',
                                ['tenant', 'idempotency_key'])


def downgrade() -> None:
    op.drop_constraint('uq_jobs_tenant_idempotency_key', 'jobs')
    op.create_unique_constraint('jobs_idempotency_key_key', 'jobs', ['idempotency_key'])
    op.drop_index('ix_jobs_tenant_queued_at', 'jobs')
    op.drop_constraint('fk_jobs_tenant', 'jobs')
    op.drop_column('jobs', 'tenant')
    op.drop_table('tenants')
