"""Database tables: patients, their classified images (records), the clinicians' reviews of
them, the films themselves (when kept in the database) and an audit trail.

Tables are separate from the API schemas; only ``repository`` functions touch them."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAME_MAX = 120
"""Longest patient name accepted (characters, after trimming)."""
PATIENT_ID_MAX = 64
"""Longest patient ID accepted."""


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class Patient(Base):
    """One patient: the name as typed (trimmed) and an optional clinic patient ID."""

    __tablename__ = "patients"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_MAX), nullable=False)
    name_key: Mapped[str] = mapped_column(String(NAME_MAX), nullable=False)
    """Case- and space-folded name, for look-ups."""
    patient_code: Mapped[str] = mapped_column(String(PATIENT_ID_MAX), nullable=False, default="")
    """The clinic's patient ID; empty when none was given."""
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)

    records: Mapped[list[Record]] = relationship(back_populates="patient")

    __table_args__ = (Index("ix_patients_identity", "name_key", "patient_code", unique=True),)


class Record(Base):
    """One classified image."""

    __tablename__ = "records"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    patient_id: Mapped[int] = mapped_column(ForeignKey("patients.id"), nullable=False, index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    file_name: Mapped[str] = mapped_column(String(255), nullable=False)
    sha256: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    prediction: Mapped[str | None] = mapped_column(String(32), nullable=True)
    """Class name (NORMAL or PNEUMONIA) as the model decided it; None when not assessed (ood)."""
    probability: Mapped[float | None] = mapped_column(Float, nullable=True)
    """Calibrated probability of PNEUMONIA; None when not assessed (ood)."""
    threshold: Mapped[float] = mapped_column(Float, nullable=False)
    uncertain: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    ood: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    """Flagged as not looking like a chest X-ray: not a diagnosis."""
    model_version: Mapped[str] = mapped_column(String(200), nullable=False)
    session_id: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    user: Mapped[str] = mapped_column(String(120), nullable=False, default="")
    submission_key: Mapped[str | None] = mapped_column(
        String(64), nullable=True, unique=True, index=True
    )
    """``<submission>/<image index>`` for a record delivered from the app's outbox: a retried
    delivery finds the row instead of adding it again (migration 0003)."""
    heatmap_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    """The class activation map kept in the film store (8-bit PNG), so the history can draw
    the overlay again at any resolution; None when there was none (migration 0004)."""

    patient: Mapped[Patient] = relationship(back_populates="records")
    reviews: Mapped[list[Review]] = relationship(back_populates="record", order_by="Review.id")


FINDINGS = ("NORMAL", "PNEUMONIA", "NOT_ASSESSABLE")
"""What a clinician can find on a film."""


class Review(Base):
    """One clinician's review of one record. Rows are only ever added: an amendment is a new
    row naming the one it amends, so no review is overwritten, and two clinicians saving at
    once both keep theirs (migration 0004)."""

    __tablename__ = "reviews"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    record_id: Mapped[int] = mapped_column(ForeignKey("records.id"), nullable=False, index=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    reviewer: Mapped[str] = mapped_column(String(120), nullable=False)
    session_id: Mapped[str] = mapped_column(String(64), nullable=False)
    agrees: Mapped[bool] = mapped_column(Boolean, nullable=False)
    """Whether the clinician agrees with the model's result."""
    finding: Mapped[str] = mapped_column(String(32), nullable=False)
    """The clinician's finding, one of FINDINGS: the label a reviewed film carries."""
    note: Mapped[str] = mapped_column(Text, nullable=False, default="")
    model_version: Mapped[str] = mapped_column(String(200), nullable=False)
    """The model that made the result reviewed (the record's, copied for the reports)."""
    amends_id: Mapped[int | None] = mapped_column(ForeignKey("reviews.id"), nullable=True)
    """The same reviewer's earlier review of this record that this one replaces."""

    record: Mapped[Record] = relationship(back_populates="reviews")


class Film(Base):
    """A film's bytes, once per content hash, when the film store is the database."""

    __tablename__ = "films"

    sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    size: Mapped[int] = mapped_column(Integer, nullable=False)
    content: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class AuditEvent(Base):
    """Who (session, user) did what (classify, view history, export) to which patient, when."""

    __tablename__ = "audit"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow, index=True)
    action: Mapped[str] = mapped_column(String(32), nullable=False)
    session_id: Mapped[str] = mapped_column(String(64), nullable=False)
    user: Mapped[str] = mapped_column(String(120), nullable=False, default="")
    patient_id: Mapped[int | None] = mapped_column(ForeignKey("patients.id"), nullable=True)
    detail: Mapped[str] = mapped_column(Text, nullable=False, default="")
    submission_key: Mapped[str | None] = mapped_column(
        String(64), nullable=True, unique=True, index=True
    )
    """The outbox submission a ``classify`` row reports; unique, as for records."""
