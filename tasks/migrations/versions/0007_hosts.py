"""hosts: each Docker host's worker, its heartbeat and whether it is drained

Revision ID: 0007
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'hosts',
        sa.Column('name', sa.String(length=255), primary_key=True),
        sa.Column('fleet', sa.String(length=128), nullable=False),
        sa.Column('queue', sa.String(length=255), nullable=False),
        sa.Column('engine_id', sa.String(length=128)),
        sa.Column('engine_url', sa.String(length=255)),
        sa.Column('engine_version', sa.String(length=64)),
        sa.Column('version', sa.String(length=64)),
        sa.Column('schema_head', sa.String(length=64)),
        sa.Column('concurrency', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('pool_size', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('slots_in_use', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('pool_warm', sa.Integer(), nullable=False, server_default='0'),
        sa.Column('drained', sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column('drained_at', sa.DateTime(timezone=True)),
        sa.Column('started_at', sa.DateTime(timezone=True)),
        sa.Column('heartbeat_at', sa.DateTime(timezone=True)),
    )


def downgrade() -> None:
    op.drop_table('hosts')
