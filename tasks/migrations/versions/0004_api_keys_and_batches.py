"""api_keys (only a keyed hash of each key); batches, and the batch a job came in

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'api_keys',
        sa.Column('key_id', sa.String(length=12), primary_key=True),
        sa.Column('tenant', sa.String(length=64), sa.ForeignKey('tenants.name'), nullable=False),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
        sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        'batches',
        sa.Column('id', sa.UUID(), primary_key=True),
        sa.Column('tenant', sa.String(length=64), sa.ForeignKey('tenants.name'), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('items', sa.Integer(), nullable=False),
        sa.Column('invalid', sa.Integer(), nullable=False),
    )
    op.add_column('jobs', sa.Column('batch_id', sa.UUID(), nullable=True))
    op.create_foreign_key('fk_jobs_batch', 'jobs', 'batches', ['batch_id'], ['id'],
                          ondelete='SET NULL')
    op.create_index('ix_jobs_batch_id', 'jobs', ['batch_id'])


def downgrade() -> None:
    op.drop_index('ix_jobs_batch_id', 'jobs')
    op.drop_constraint('fk_jobs_batch', 'jobs')
    op.drop_column('jobs', 'batch_id')
    op.drop_table('batches')
    op.drop_table('api_keys')
