"""Checkouts: the vault entry of the OTP submission that won the move to VERIFYING_OTP

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.add_column(sa.Column('otp_ref', sa.String(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('checkout', schema=None) as batch_op:
        batch_op.drop_column('otp_ref')
