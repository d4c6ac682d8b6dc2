"""Merchant events: the outbox and its delivery attempts

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table('merchant_event',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('event_id', sa.String(length=40), nullable=False),
    sa.Column('type', sa.String(length=40), nullable=False),
    sa.Column('subject_id', sa.String(length=40), nullable=False),
    sa.Column('refund_id', sa.String(length=40), nullable=True),
    sa.Column('payload', sa.String(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('claim', sa.String(length=40), nullable=True),
    sa.Column('claimed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('task_sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('event_id', name='uq_merchant_event_event_id')
    )
    with op.batch_alter_table('merchant_event', schema=None) as batch_op:
        batch_op.create_index('ix_merchant_event_due', ['status', 'next_attempt_at'], unique=False)
        batch_op.create_index('ix_merchant_event_subject', ['subject_id', 'id'], unique=False)
    op.create_table('merchant_event_attempt',
    sa.Column('id', BIG_ID, autoincrement=True, nullable=False),
    sa.Column('event_id', sa.BigInteger(), nullable=False),
    sa.Column('attempted_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('outcome', sa.String(length=16), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('latency_ms', sa.Integer(), nullable=False),
    sa.Column('error', sa.String(), nullable=True),
    sa.ForeignKeyConstraint(['event_id'], ['merchant_event.id']),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('merchant_event_attempt', schema=None) as batch_op:
        batch_op.create_index('ix_merchant_event_attempt_event', ['event_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('merchant_event_attempt', schema=None) as batch_op:
        batch_op.drop_index('ix_merchant_event_attempt_event')
    op.drop_table('merchant_event_attempt')
    with op.batch_alter_table('merchant_event', schema=None) as batch_op:
        batch_op.drop_index('ix_merchant_event_subject')
        batch_op.drop_index('ix_merchant_event_due')
    op.drop_table('merchant_event')
