"""The page's review and history parts (layout only): the review form under every stored
result, the patient history with films, reviews, filters and exports, the film viewer (full
resolution, zoom, heatmap overlay) and the agreement section. Work is done by ``reviews``,
``records``, ``film_view``, ``history_export`` and ``evaluation.agreement``."""

from __future__ import annotations

import streamlit as st

from pneumo.app import film_view, history_export, records, reviews
from pneumo.app.display import download_pair, md
from pneumo.app.studies import Study, display_finding, filter_studies, study_row
from pneumo.errors import PneumoError
from pneumo.storage.reviews import NOTE_MAX, STATES, model_finding
from pneumo.storage.tables import FINDINGS

ZOOMS = ("Fit", "2x", "4x", "8x")
"""The viewer's zoom steps: the whole film, then a half, a quarter, an eighth of its width."""


def reviewer() -> str:
    """Who is reviewing: the signed-in user, else the name typed in the sidebar."""
    ss = st.session_state
    return ss.user or ss.get("reviewer_name", "").strip()


def reviewer_field() -> None:
    """In the sidebar: without sign-in, reviews need a name to be attributed to."""
    if not st.session_state.user:
        st.text_input(
            "Reviewer (your name)",
            key="reviewer_name",
            max_chars=120,
            help="Saved with every review you make (no password is configured).",
        )


def _choices(study: Study) -> list[tuple[str, bool, str | None]]:
    said = model_finding(_Said(study))
    agree = (f"Agree: {display_finding(said)}", True, None)
    return [agree] + [
        (f"Disagree: {display_finding(f).lower()}", False, f) for f in FINDINGS if f != said
    ]


class _Said:
    """A study seen as ``model_finding`` reads a record."""

    def __init__(self, study: Study):
        self.ood, self.prediction = study.ood, study.prediction


def review_summary(study: Study) -> str:
    """The review state in words, for the result's card."""
    if study.state == "awaiting":
        return "**Awaiting review**"
    latest = study.latest
    if study.state == "disputed":
        return "**Disputed**: the reviewers' findings differ (see below)"
    said = "agreed" if study.state == "agreed" else "corrected"
    return f"**Reviewed: {said}** ({display_finding(study.finding)}), last by {md(latest.reviewer)}"


def review_form(factory, study: Study, where: str) -> None:
    """State, every review so far (amendments included) and the form to add one."""
    ss = st.session_state
    flash = ss.setdefault("review_flash", {})
    st.markdown(review_summary(study))
    for r in study.reviews:
        verdict = "agrees" if r.agrees else "disagrees"
        when = r.created.strftime("%Y-%m-%d %H:%M") if r.created else ""
        amends = f", amends review {r.amends_id}" if r.amends_id else ""
        note = f": {md(r.note)}" if r.note else ""
        st.caption(
            f"Review {r.id} by {md(r.reviewer)} ({when} UTC{amends}): {verdict}, "
            f"{display_finding(r.finding)}{note}"
        )
    if study.record_id in flash:
        st.success(flash.pop(study.record_id))
    choices = _choices(study)
    with st.form(f"review_{where}_{study.record_id}"):
        st.markdown(f"Review of {md(study.file_name)} (record {study.record_id})")
        label = st.radio("Your review", [c[0] for c in choices], index=None, horizontal=True)
        note = st.text_area("Note", max_chars=NOTE_MAX, height=68)
        submitted = st.form_submit_button("Save review")
    if not submitted:
        return
    if label is None:
        st.error("Choose agree or disagree (with your finding) before saving.")
        return
    if not reviewer():
        st.error("Type your name as reviewer (sidebar) to save a review.")
        return
    _, agrees, finding = next(c for c in choices if c[0] == label)
    try:
        saved = reviews.save_review(
            session_factory=factory,
            record_id=study.record_id,
            agrees=agrees,
            finding=finding,
            note=note,
            reviewer=reviewer(),
            session_id=ss.session_id,
        )
    except PneumoError as exc:  # bad input, or the database is unavailable
        st.error(str(exc))
        return
    amended = f", amending review {saved.amends_id}" if saved.amends_id else ""
    flash[study.record_id] = f"Review {saved.id} saved{amended}."
    st.rerun()


def awaiting_note(studies: list[Study]) -> None:
    waiting = sum(s.state == "awaiting" for s in studies)
    if waiting:
        st.info(f"{waiting} of {len(studies)} saved result(s) await a clinician's review.")
    elif studies:
        st.success(f"All {len(studies)} saved result(s) have been reviewed.")


@st.cache_data(max_entries=256, show_spinner=False)
def _card_pictures(_films, sha: str, heat_sha: str | None, max_pixels: int):
    """Thumbnail and heatmap overlay (JPEG) of a stored film; None where not kept."""
    data = _films.get(sha)
    if data is None:
        return None, None
    try:
        thumb = film_view.thumbnail(data, sha[:12], max_pixels)
    except PneumoError:
        return None, None
    heat = _films.get(heat_sha) if heat_sha else None
    overlay = film_view.jpeg(film_view.with_overlay(thumb, heat)) if heat else None
    return film_view.jpeg(thumb), overlay


def history_tab(factory, films, protected: bool, max_pixels: int) -> None:
    ss = st.session_state
    if not protected:
        st.caption(
            "No password is configured: anyone who can open this page can read the "
            "history. Set PNEUMO_APP_PASSWORD_HASH (see docs/app.md)."
        )
    query = st.text_input("Find patient (name or ID)", key="history_query")
    audit = False
    if st.button("Show history") and query.strip():
        ss.history_shown, audit = query, True
        ss.open_record = None
    shown = ss.get("history_shown")
    if not shown:
        return
    try:
        found = records.patient_history(
            session_factory=factory,
            query=shown,
            session_id=ss.session_id,
            user=ss.user,
            audit=audit,
        )
    except records.HistoryUnavailable as exc:
        st.error(str(exc))
        return
    if not found:
        st.info("No patient matches.")
        return
    left, mid, right = st.columns([2, 1, 1])
    state = left.radio("Review state", ("all", *STATES), key="history_states", horizontal=True)
    states = None if state == "all" else [state]
    start = mid.date_input("From", value=None, key="history_from")
    end = right.date_input("To", value=None, key="history_to")
    if ss.get("open_record"):
        film_viewer(factory, films, max_pixels)
    selection: list[Study] = []
    for h in found:
        chosen = filter_studies(h.studies, states=states, start=start, end=end)
        selection += chosen
        st.markdown(
            f"**{md(h.name)}**"
            + (f" (ID {md(h.patient_id)})" if h.patient_id else "")
            + f": {len(h.rows)} record(s), {len(chosen)} shown"
        )
        st.dataframe([study_row(s) for s in chosen], hide_index=True)
        for study in chosen:
            study_card(study, films, max_pixels)
    if selection:
        export_selection(factory, films, selection, max_pixels)


def study_card(study: Study, films, max_pixels: int) -> None:
    thumb, heat = _card_pictures(films, study.sha256, study.heatmap_sha256, max_pixels)
    with st.container(border=True):
        cols = st.columns([1, 1, 2])
        if thumb:
            cols[0].image(thumb, caption=md(study.file_name), width="stretch")
        else:
            cols[0].caption(f"{md(study.file_name)}: film not kept")
        if heat:
            cols[1].image(heat, caption="Heatmap", width="stretch")
        else:
            cols[1].caption("No heatmap")
        info = cols[2]
        when = study.created.strftime("%Y-%m-%d %H:%M") if study.created else ""
        info.markdown(f"**{md(study.file_name)}: {study.result}**  \n{when} UTC")
        info.caption(f"Record {study.record_id} · model {md(study.model_version)}")
        info.markdown(review_summary(study))
        if study.note:
            info.markdown(f"**Note:** {md(study.note)}")
        info.button(
            "Open film",
            key=f"open_{study.record_id}",
            on_click=_open,
            args=(study.record_id,),
            disabled=thumb is None,
        )


def _open(record_id: int) -> None:
    st.session_state.open_record = record_id
    st.session_state.open_audit = True


def _close() -> None:
    st.session_state.open_record = None


@st.cache_data(max_entries=4, show_spinner="Decoding the film at full resolution...")
def _full(_films, sha: str, heat_sha: str | None, overlay: bool, max_pixels: int) -> bytes:
    img = film_view.full_resolution(_films.get(sha), sha[:12], max_pixels)
    if overlay:
        img = film_view.with_overlay(img, _films.get(heat_sha))
    return film_view.png(img)


def film_viewer(factory, films, max_pixels: int) -> None:
    """The opened film at full resolution; zoom shows a part of it at its own pixels, the
    overlay toggle draws the stored heatmap over it, the review form is under it."""
    ss = st.session_state
    rid = ss.open_record
    try:
        opened = reviews.open_film(
            session_factory=factory,
            films=films,
            record_id=rid,
            session_id=ss.session_id,
            user=ss.user,
            audit=ss.pop("open_audit", False),
        )
    except PneumoError as exc:
        st.error(str(exc))
        return
    study = opened.study
    with st.container(border=True):
        st.subheader(f"Film: {md(study.file_name)} (record {rid})")
        st.caption(
            f"{study.result}, classified by {md(study.model_version)}; "
            f"{md(study.patient_name)}"
            + (f" (ID {md(study.patient_id)})" if study.patient_id else "")
        )
        a, b, c = st.columns([1, 2, 1])
        show_overlay = a.toggle(
            "Heatmap overlay", key=f"overlay_{rid}", disabled=opened.heat is None
        )
        zoom = b.select_slider("Zoom", ZOOMS, value="Fit", key=f"zoom_{rid}")
        c.button("Close film", on_click=_close)
        if opened.film is None:
            st.warning("The film of this result was not kept (film store full or unavailable).")
        else:
            try:
                data = _full(films, study.sha256, study.heatmap_sha256, show_overlay, max_pixels)
            except PneumoError as exc:
                st.error(str(exc))
                return
            _show_zoomed(data, zoom, rid)
        review_form(factory, study, "viewer")


def _show_zoomed(data: bytes, zoom: str, rid: int) -> None:
    import io

    from PIL import Image

    with Image.open(io.BytesIO(data)) as img:
        width, height = img.size
        if zoom == "Fit":
            st.caption(f"Full resolution: {width} x {height} pixels (scaled to the page)")
            st.image(data, width=width)  # its own width: the page gets every pixel
            return
        factor = int(zoom[:-1])
        x = st.slider("Horizontal position", 0, 100, 50, key=f"pan_x_{rid}")
        y = st.slider("Vertical position", 0, 100, 50, key=f"pan_y_{rid}")
        w, h = max(1, width // factor), max(1, height // factor)
        left = round((width - w) * x / 100)
        top = round((height - h) * y / 100)
        part = img.crop((left, top, left + w, top + h))
    st.caption(f"{zoom}: pixels {left}-{left + w} x {top}-{top + h} of {width} x {height}")
    st.image(film_view.png(part), width="stretch")


def export_selection(factory, films, selection: list[Study], max_pixels: int) -> None:
    """CSV and PDF of the studies shown (after the filters), built and audited when asked."""
    ss = st.session_state
    session_id, user = ss.session_id, ss.user

    def pictures(study: Study):
        return _card_pictures(films, study.sha256, study.heatmap_sha256, max_pixels)

    def build(kind: str):
        def make() -> bytes:
            reviews.audit_history_export(
                session_factory=factory,
                studies=selection,
                session_id=session_id,
                user=user,
                kind=kind,
            )
            if kind == "csv":
                return history_export.history_csv(selection)
            return history_export.history_pdf(selection, pictures)

        return make

    download_pair(
        build,
        (
            f"Download selection (CSV, {len(selection)})",
            f"Download selection (PDF, {len(selection)})",
        ),
        ("pneumo-history.csv", "pneumo-history.pdf"),
        key="history",
    )


def agreement_tab(factory) -> None:
    """The agreement report over the whole database, on request."""
    import logging

    from pneumo.evaluation.agreement import agreement_of
    from pneumo.storage.db import describe_db_error

    st.caption(
        "How often clinicians agreed with the model, and its sensitivity and specificity "
        "against their findings (95% Wilson intervals). Same as `pneumo report agreement`."
    )
    if not st.button("Show agreement"):
        return
    try:
        report = agreement_of(factory)
    except Exception as exc:  # noqa: BLE001 - a message for the page; the class goes to the log
        logging.getLogger(__name__).error("agreement report failed: %s", describe_db_error(exc))
        st.error("The agreement report is unavailable: the database cannot be read.")
        return
    st.markdown(
        f"Reviewed results: **{report.overall.reviewed}**; disputed: {report.disputed}; "
        f"awaiting review: {report.awaiting}."
    )
    for title, groups in (
        ("Overall", [report.overall]),
        ("By model version", report.by_model),
        ("By month classified (UTC)", report.by_month),
    ):
        st.markdown(f"**{title}**")
        st.dataframe(
            [
                {
                    "group": g.name,
                    "reviewed": g.reviewed,
                    "agreement": str(g.agreement),
                    "sensitivity": str(g.sensitivity),
                    "specificity": str(g.specificity),
                    "not assessable": g.not_assessable,
                }
                for g in groups
            ],
            hide_index=True,
        )
