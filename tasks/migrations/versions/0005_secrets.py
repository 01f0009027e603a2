"""secrets: a tenant's job secrets, sealed with AES-256-GCM (tasks/secrets.py)

Revision ID: 0005
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'secrets',
        sa.Column('tenant', sa.String(length=64), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('key_id', sa.String(length=16), nullable=False),
        sa.Column('nonce', sa.LargeBinary(), nullable=False),
        sa.Column('ciphertext', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
                  nullable=False),
        sa.ForeignKeyConstraint(['tenant'], ['tenants.name'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('tenant', 'name'),
    )


def downgrade() -> None:
    op.drop_table('secrets')
