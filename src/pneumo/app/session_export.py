"""Export one session's results: a CSV table and a PDF report with the images and heatmaps."""

from __future__ import annotations

import csv
import io
import logging
from datetime import UTC, datetime
from pathlib import Path

from pneumo.app.classify import ImageResult, Submission
from pneumo.app.display import display_result
from pneumo.inference.predictor import Prediction, field_types

DISCLAIMER = (
    "Research use only. Not a medical device and not a diagnosis: every result must be "
    "reviewed by a qualified clinician."
)
ATTRIBUTION = (
    "Model trained on 'Chest X-Ray Images (Pneumonia)', Kermany, Zhang, Goldbaum (2018), "
    "Mendeley Data V2, doi:10.17632/rscbjbr9sj.2, CC BY 4.0: pediatric patients aged 1-5, "
    "Guangzhou Women and Children's Medical Center."
)
CSV_COLUMNS = (
    "time_utc",
    "patient_name",
    "patient_id",
    "file",
    "sha256",
    "result",
    "p_pneumonia",
    "p_normal",
    "confidence",
    "threshold",
    "uncertain",
    "not_chest_xray",
    "ood_score",
    "model_version",
    "record_id",
    "error",
)


def _status(r: ImageResult) -> str:
    if r.error:
        return "error"
    p = r.prediction
    if p is None:
        return "error"
    return display_result(p.label, p.ood)


PREDICTION_CELLS = {
    "p_pneumonia": "probability",
    "confidence": "confidence",
    "threshold": "threshold",
    "uncertain": "uncertain",
    "not_chest_xray": "ood",
    "ood_score": "ood_score",
}
"""Report columns taken straight from a ``Prediction`` field (numbers to 4 decimals, flags as
True/False; empty or False without a prediction)."""


def _prediction_cells(p: Prediction | None) -> dict:
    """The report's cells that come from the prediction record."""
    types = field_types()
    cells = {}
    for column, name in PREDICTION_CELLS.items():
        value = None if p is None else getattr(p, name)
        cells[column] = bool(value) if types[name] is bool else _num(value)
    probability = None if p is None else p.probability
    cells["p_normal"] = _num(None if probability is None else 1 - probability)
    return cells


def results_csv(submissions: list[Submission]) -> bytes:
    """One row per image of every submission, errors included (UTF-8 with BOM for Excel)."""
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(CSV_COLUMNS)
    for sub in submissions:
        for r in sub.results:
            row = {
                "time_utc": r.created,
                "patient_name": _safe_cell(sub.patient_name),
                "patient_id": _safe_cell(sub.patient_id),
                "file": _safe_cell(r.name),
                "sha256": r.sha256,
                "result": _status(r),
                **_prediction_cells(r.prediction),
                "model_version": sub.model_version,
                "record_id": r.record_id if r.record_id is not None else "",
                "error": _safe_cell(r.error or r.store_error or ""),
            }
            writer.writerow([row[c] for c in CSV_COLUMNS])
    return ("\ufeff" + buf.getvalue()).encode("utf-8", "backslashreplace")  # lone surrogates


def _num(value) -> str:
    if value is None or value is False:
        return ""
    return f"{float(value):.4f}"


def _safe_cell(text: str) -> str:
    """Defuse spreadsheet formula injection in free text (file names, patient names)."""
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _unicode_font() -> Path | None:
    """DejaVu Sans shipped with matplotlib (a core dependency), for names in any script."""
    import importlib.util

    spec = importlib.util.find_spec("matplotlib")
    if spec and spec.origin:
        path = Path(spec.origin).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if path.is_file():
            return path
    return None


class _NoGlyphLists(logging.Filter):
    """fpdf logs the characters a font lacks, which can spell out a patient's name: keep the
    warning, drop the characters."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "missing the following glyphs" in str(record.msg) and isinstance(record.args, tuple):
            record.args = (*record.args[:1], "(not listed: they may come from patient names)")
        return True


def _quiet_fpdf() -> None:
    logger = logging.getLogger("fpdf.output")
    if not any(isinstance(f, _NoGlyphLists) for f in logger.filters):
        logger.addFilter(_NoGlyphLists())


def results_pdf(submissions: list[Submission], *, heatmaps: bool = True) -> bytes:
    """A PDF: header with disclaimer, then per image the picture, its heatmap and the numbers."""
    from fpdf import FPDF

    _quiet_fpdf()

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(auto=True, margin=15)
    font = _unicode_font()
    if font is not None:
        pdf.add_font("dejavu", "", str(font))
        family = "dejavu"
    else:  # pragma: no cover - matplotlib always ships the font
        family = "helvetica"

    def text(s: str) -> str:
        return s if font is not None else s.encode("latin-1", "replace").decode("latin-1")

    pdf.add_page()
    pdf.set_font(family, size=16)
    pdf.cell(0, 10, "Pneumonia screening report", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(family, size=9)
    pdf.multi_cell(0, 5, text(DISCLAIMER), new_x="LMARGIN", new_y="NEXT")
    pdf.ln(2)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    for sub in submissions:
        pdf.set_font(family, size=12)
        who = sub.patient_name + (f"  (ID {sub.patient_id})" if sub.patient_id else "")
        pdf.multi_cell(0, 7, text(f"Patient: {who}"), new_x="LMARGIN", new_y="NEXT")
        pdf.set_font(family, size=9)
        pdf.cell(
            0,
            5,
            text(f"Model: {sub.model_version}   Report: {generated}"),
            new_x="LMARGIN",
            new_y="NEXT",
        )
        for r in sub.results:
            _image_block(pdf, r, text, heatmaps)
    pdf.ln(3)
    pdf.set_font(family, size=8)
    pdf.multi_cell(0, 4, text(ATTRIBUTION), new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())


def _image_block(pdf, r: ImageResult, text, heatmaps: bool) -> None:
    side = 60.0
    if pdf.get_y() + side + 20 > pdf.h - 15:
        pdf.add_page()
    pdf.ln(3)
    family_size = pdf.font_size_pt
    pdf.set_font(size=11)
    pdf.multi_cell(0, 6, text(f"{r.name}: {_status(r)}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font(size=family_size)
    if r.error:
        pdf.multi_cell(0, 5, text(r.error), new_x="LMARGIN", new_y="NEXT")
        return
    p = r.prediction
    if p.ood:  # no numbers that read as a diagnosis
        lines = [f"This does not look like a chest X-ray: no diagnosis is given ({p.ood_reason})."]
    else:
        lines = [
            f"P(pneumonia) {p.probability:.1%}   P(normal) {1 - p.probability:.1%}   "
            f"confidence {p.confidence:.1%}   threshold {p.threshold:.3f}",
        ]
    if p.uncertain:
        lines.append("Uncertain: the probability lies close to the threshold.")
    lines.append(f"SHA-256 {r.sha256}")
    for line in lines:
        pdf.multi_cell(0, 5, text(line), new_x="LMARGIN", new_y="NEXT")
    top = pdf.get_y() + 1
    x = pdf.l_margin
    if r.thumbnail:
        pdf.image(io.BytesIO(r.thumbnail), x=x, y=top, w=side, h=side, keep_aspect_ratio=True)
    if heatmaps and r.heatmap:
        pdf.image(
            io.BytesIO(r.heatmap), x=x + side + 5, y=top, w=side, h=side, keep_aspect_ratio=True
        )
    pdf.set_y(top + side + 2)
