"""job_files (the manifest of collected files), jobs.files (its summary); job_blobs.data may
be NULL (the frame is in the object store)

Revision ID: 0006
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('jobs', sa.Column('files', postgresql.JSONB(none_as_null=True), nullable=True))
    op.create_table(
        'job_files',
        sa.Column('job_id', sa.UUID(), sa.ForeignKey('jobs.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('n', sa.Integer(), nullable=False),
        sa.Column('path', sa.Text(), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('size', sa.BigInteger(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=True),
        sa.Column('mode', sa.Integer(), nullable=True),
        sa.PrimaryKeyConstraint('job_id', 'attempt', 'n'),
    )
    op.alter_column('job_blobs', 'data', existing_type=sa.LargeBinary(), nullable=True)


def downgrade() -> None:
    op.execute("DELETE FROM job_blobs WHERE data IS NULL")
    op.alter_column('job_blobs', 'data', existing_type=sa.LargeBinary(), nullable=False)
    op.drop_table('job_files')
    op.drop_column('jobs', 'files')
