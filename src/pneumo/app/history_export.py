"""Export a selection of the history: a CSV table and a PDF with each film's thumbnail, its
heatmap, the model's result and the clinicians' review."""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from datetime import UTC, datetime

from pneumo.app.session_export import (
    ATTRIBUTION,
    DISCLAIMER,
    _quiet_fpdf,
    _safe_cell,
    _unicode_font,
)
from pneumo.app.studies import Study, display_finding

CSV_COLUMNS = (
    "time_utc",
    "patient_name",
    "patient_id",
    "record_id",
    "file",
    "sha256",
    "result",
    "p_pneumonia",
    "threshold",
    "uncertain",
    "model_version",
    "review_state",
    "clinician_finding",
    "reviewer",
    "reviewed_utc",
    "note",
)


def _utc(moment: datetime | None) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def history_csv(studies: list[Study]) -> bytes:
    """One row per study with its latest review (UTF-8 with BOM for Excel)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for s in studies:
        latest = s.latest
        p = None if s.ood or s.probability is None else f"{s.probability:.4f}"
        writer.writerow(
            [
                _utc(s.created),
                _safe_cell(s.patient_name),
                _safe_cell(s.patient_id),
                s.record_id,
                _safe_cell(s.file_name),
                s.sha256,
                s.result,
                p or "",
                f"{s.threshold:.4f}",
                s.uncertain,
                s.model_version,
                s.state,
                display_finding(s.finding),
                _safe_cell(latest.reviewer) if latest else "",
                _utc(latest.created) if latest else "",
                _safe_cell(s.note),
            ]
        )
    return ("\ufeff" + buf.getvalue()).encode("utf-8", "backslashreplace")


def history_pdf(
    studies: list[Study], pictures: Callable[[Study], tuple[bytes | None, bytes | None]]
) -> bytes:
    """A PDF of the selection; ``pictures(study)`` gives its thumbnail and heatmap as JPEG
    (None where the film store does not hold them)."""
    from fpdf import FPDF

    _quiet_fpdf()
    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(auto=True, margin=15)
    font = _unicode_font()
    family = "helvetica"
    if font is not None:
        pdf.add_font("dejavu", "", str(font))
        family = "dejavu"

    def text(s: str) -> str:
        return s if font is not None else s.encode("latin-1", "replace").decode("latin-1")

    def line(s: str, size: float = 9, height: float = 5) -> None:
        pdf.set_font(family, size=size)
        pdf.multi_cell(0, height, text(s), new_x="LMARGIN", new_y="NEXT")

    pdf.add_page()
    line("Patient history: reviewed results", 16, 10)
    line(DISCLAIMER)
    line(f"Report: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}, {len(studies)} result(s)")
    side = 55.0
    for s in studies:
        if pdf.get_y() + side + 35 > pdf.h - 15:
            pdf.add_page()
        pdf.ln(3)
        who = s.patient_name + (f" (ID {s.patient_id})" if s.patient_id else "")
        line(f"{who}: {s.file_name}", 11, 6)
        line(f"Record {s.record_id}, classified {_utc(s.created)} by {s.model_version}")
        numbers = "" if s.ood or s.probability is None else f", P(pneumonia) {s.probability:.1%}"
        line(f"Model result: {s.result}{numbers}, threshold {s.threshold:.3f}")
        if s.latest is None:
            line("Review: awaiting review")
        for r in s.reviews:
            verdict = "agrees" if r.agrees else "disagrees"
            amended = f" (amends review {r.amends_id})" if r.amends_id else ""
            line(
                f"Review {r.id} by {r.reviewer}, {_utc(r.created)}: {verdict}, finding "
                f"{display_finding(r.finding)}{amended}" + (f". Note: {r.note}" if r.note else "")
            )
        thumb, heat = pictures(s)
        top = pdf.get_y() + 1
        if thumb:
            pdf.image(
                io.BytesIO(thumb), x=pdf.l_margin, y=top, w=side, h=side, keep_aspect_ratio=True
            )
        if heat:
            pdf.image(
                io.BytesIO(heat),
                x=pdf.l_margin + side + 5,
                y=top,
                w=side,
                h=side,
                keep_aspect_ratio=True,
            )
        if thumb or heat:
            pdf.set_y(top + side + 2)
    pdf.ln(3)
    line(ATTRIBUTION, 8, 4)
    return bytes(pdf.output())
