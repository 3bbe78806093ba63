"""How the model fares against the clinicians who reviewed its results: how often they agreed,
and sensitivity and specificity with the clinicians' findings as the truth, overall, by model
version and by month, each with a 95% Wilson interval (scipy), so a site sees whether the model
helps it."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path


@dataclass(frozen=True)
class AgreementCase:
    """One reviewed result whose clinicians share a finding."""

    model_finding: str
    """NORMAL, PNEUMONIA or NOT_ASSESSABLE (the model flagged the film as not a chest X-ray)."""
    clinician_finding: str
    model_version: str
    classified: datetime | None


@dataclass(frozen=True)
class Proportion:
    """``k`` of ``n``, with its 95% Wilson interval; value and interval None when ``n`` is 0."""

    k: int
    n: int
    value: float | None
    low: float | None
    high: float | None

    @classmethod
    def of(cls, k: int, n: int) -> Proportion:
        if n == 0:
            return cls(k, n, None, None, None)
        from scipy.stats import binomtest

        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        return cls(k, n, k / n, float(ci.low), float(ci.high))

    def __str__(self) -> str:
        if self.value is None:
            return "n/a"
        return (
            f"{100 * self.value:.1f}% ({100 * self.low:.1f} to {100 * self.high:.1f}; "
            f"{self.k}/{self.n})"
        )


@dataclass(frozen=True)
class AgreementGroup:
    """The figures of one group of reviewed results."""

    name: str
    reviewed: int
    agreement: Proportion
    """Results whose clinicians' finding is the model's."""
    sensitivity: Proportion
    """Films the clinicians found PNEUMONIA that the model called PNEUMONIA."""
    specificity: Proportion
    """Films the clinicians found NORMAL that the model called NORMAL."""
    not_assessable: int
    """Results the clinicians found not assessable (out of sensitivity and specificity)."""


@dataclass(frozen=True)
class AgreementReport:
    overall: AgreementGroup
    by_model: list[AgreementGroup]
    by_month: list[AgreementGroup]
    disputed: int
    """Results whose current reviews disagree with each other (left out of every figure)."""
    awaiting: int
    """Results not reviewed yet."""

    def as_dict(self) -> dict:
        return asdict(self)


def summarize(name: str, cases: list[AgreementCase]) -> AgreementGroup:
    agree = sum(c.model_finding == c.clinician_finding for c in cases)
    sick = [c for c in cases if c.clinician_finding == "PNEUMONIA"]
    well = [c for c in cases if c.clinician_finding == "NORMAL"]
    return AgreementGroup(
        name=name,
        reviewed=len(cases),
        agreement=Proportion.of(agree, len(cases)),
        sensitivity=Proportion.of(sum(c.model_finding == "PNEUMONIA" for c in sick), len(sick)),
        specificity=Proportion.of(sum(c.model_finding == "NORMAL" for c in well), len(well)),
        not_assessable=sum(c.clinician_finding == "NOT_ASSESSABLE" for c in cases),
    )


def agreement_summary(
    cases: list[AgreementCase], *, disputed: int = 0, awaiting: int = 0
) -> AgreementReport:
    """The figures overall, per model version and per month of classification (UTC)."""
    by_model: dict[str, list[AgreementCase]] = defaultdict(list)
    by_month: dict[str, list[AgreementCase]] = defaultdict(list)
    for c in cases:
        by_model[c.model_version].append(c)
        by_month[c.classified.strftime("%Y-%m") if c.classified else "unknown"].append(c)
    return AgreementReport(
        overall=summarize("all", cases),
        by_model=[summarize(k, v) for k, v in sorted(by_model.items())],
        by_month=[summarize(k, v) for k, v in sorted(by_month.items())],
        disputed=disputed,
        awaiting=awaiting,
    )


def agreement_report(db: str | Path | None = None) -> AgreementReport:
    """How often clinicians agreed with the model, and its sensitivity and specificity against
    their findings, overall, by model version and by month, with 95% Wilson intervals. Reads
    the app's records database (--db URL or SQLite file; default $PNEUMO_DB)."""
    from pneumo.storage.db import open_database

    factory = open_database(db)
    try:
        return agreement_of(factory)
    finally:
        factory.kw["bind"].dispose()


def agreement_of(session_factory) -> AgreementReport:
    """``agreement_report`` over an open records database (the page's)."""
    from pneumo.storage.reviews import agreement_cases

    with session_factory() as s:
        cases, disputed, awaiting = agreement_cases(s)
    return agreement_summary(cases, disputed=disputed, awaiting=awaiting)


COLUMNS = ("group", "reviewed", "agreement", "sensitivity", "specificity", "not assessable")


def agreement_markdown(report: AgreementReport) -> str:
    """The report as Markdown tables (95% Wilson intervals in brackets)."""
    lines = [
        "# Agreement with the clinicians' reviews",
        "",
        f"Reviewed results: {report.overall.reviewed}; disputed (left out): {report.disputed}; "
        f"awaiting review: {report.awaiting}. Percentages with 95% Wilson intervals; the "
        "clinicians' findings are the truth.",
    ]
    for title, groups in (
        ("Overall", [report.overall]),
        ("By model version", report.by_model),
        ("By month classified (UTC)", report.by_month),
    ):
        lines += ["", f"## {title}", "", "| " + " | ".join(COLUMNS) + " |"]
        lines.append("|" + "---|" * len(COLUMNS))
        for g in groups:
            cells = (g.name, g.reviewed, g.agreement, g.sensitivity, g.specificity)
            lines.append("| " + " | ".join(str(c) for c in (*cells, g.not_assessable)) + " |")
    return "\n".join(lines) + "\n"
