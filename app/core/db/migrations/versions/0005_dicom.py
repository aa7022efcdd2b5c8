"""DICOM network: accepted AE titles, ingest settings, routing rules, the instance index and
the studies a dataset was built from.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _tenant_fk() -> sa.Column:
    return sa.Column(
        "tenant_id", sa.String(32), sa.ForeignKey("tenants.id", ondelete="CASCADE"),
        nullable=False, index=True,
    )


def upgrade() -> None:
    op.create_table(
        "dicom_aes",
        sa.Column("id", sa.String(32), primary_key=True),
        _tenant_fk(),
        sa.Column("ae_title", sa.String(16), nullable=False, unique=True),
        sa.Column("host", sa.String(255), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dicom_settings",
        sa.Column("tenant_id", sa.String(32), sa.ForeignKey("tenants.id", ondelete="CASCADE"),
                  primary_key=True),
        sa.Column("deidentify", sa.Boolean(), nullable=False),
        sa.Column("keep_dates", sa.Boolean(), nullable=False),
        sa.Column("secret", sa.String(64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dicom_rules",
        sa.Column("id", sa.String(32), primary_key=True),
        _tenant_fk(),
        sa.Column("modality", sa.String(16), nullable=True),
        sa.Column("calling_ae", sa.String(16), nullable=True),
        sa.Column("model_id", sa.String(32), sa.ForeignKey("models.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("destination", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "dicom_instances",
        sa.Column("id", sa.String(32), primary_key=True),
        _tenant_fk(),
        sa.Column("study_uid", sa.String(64), nullable=False, index=True),
        sa.Column("series_uid", sa.String(64), nullable=False, index=True),
        sa.Column("sop_uid", sa.String(64), nullable=False),
        sa.Column("sop_class_uid", sa.String(64), nullable=False),
        sa.Column("modality", sa.String(16), nullable=False),
        sa.Column("patient_id", sa.String(64), nullable=False, index=True),
        sa.Column("study_date", sa.String(8), nullable=False, index=True),
        sa.Column("burned_in", sa.String(8), nullable=False),
        sa.Column("source", sa.String(32), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.String(400), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("tenant_id", "sop_uid", name="uq_dicom_tenant_sop"),
    )
    op.create_table(
        "dicom_datasets",
        sa.Column("dataset_id", sa.String(32), sa.ForeignKey("datasets.id", ondelete="CASCADE"),
                  primary_key=True),
        _tenant_fk(),
        sa.Column("study_uids", sa.JSON(), nullable=False),
        sa.Column("query", sa.JSON(), nullable=False),
    )


def downgrade() -> None:
    for table in ("dicom_datasets", "dicom_instances", "dicom_rules", "dicom_settings",
                  "dicom_aes"):
        op.drop_table(table)
