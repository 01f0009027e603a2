"""tenant egress: each tenant's own endpoints (airlock tenant set-egress), reachable by its
jobs only, beside the fleet's common allowlist (docs/network.md)

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


def upgrade() -> None:
    op.add_column('tenants', sa.Column('egress_domains', ARRAY(sa.String(length=253)),
                                       nullable=False, server_default=sa.text("'{}'")))


def downgrade() -> None:
    op.drop_column('tenants', 'egress_domains')
