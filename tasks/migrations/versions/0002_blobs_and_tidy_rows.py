"""job_blobs (outputs kept whole); absent evidence, phases, provenance as SQL NULL

Revision ID: 0002
Revises: 0001

Rows written by a job's error path held JSON null in evidence and provenance, and phases as
``[null, {"persist_ms": N}]`` (JSON null merged into an array): they become SQL NULL, and the
array's objects one object.
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

MERGE_ARRAY = """
UPDATE jobs SET phases = (
    SELECT jsonb_object_agg(kv.key, kv.value)
    FROM jsonb_array_elements(jobs.phases) AS e(elem)
    CROSS JOIN LATERAL jsonb_each(
        CASE WHEN jsonb_typeof(e.elem) = 'object' THEN e.elem ELSE '{}'::jsonb END) AS kv
) WHERE jsonb_typeof(phases) = 'array'
"""


def upgrade() -> None:
    for column in ("evidence", "phases", "provenance"):
        op.execute(f"UPDATE jobs SET {column} = NULL WHERE jsonb_typeof({column}) = 'null'")
    op.execute(MERGE_ARRAY)
    op.create_table(
        'job_blobs',
        sa.Column('job_id', sa.UUID(), sa.ForeignKey('jobs.id', ondelete='CASCADE'),
                  nullable=False),
        sa.Column('attempt', sa.Integer(), nullable=False),
        sa.Column('blob', sa.String(length=300), nullable=False),
        sa.Column('seq', sa.Integer(), nullable=False),
        sa.Column('raw_bytes', sa.Integer(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint('job_id', 'attempt', 'blob', 'seq'),
    )


def downgrade() -> None:
    op.drop_table('job_blobs')
