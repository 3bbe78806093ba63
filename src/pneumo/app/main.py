"""The Streamlit page: layout only. Input is read by ``intake``, classified and stored by
``records``, exported by ``report``; the password gate is ``auth``. The model and the database
are opened once per process.

Run with ``pneumo app`` (which sets the environment this page reads)."""

from __future__ import annotations

import uuid

import streamlit as st

from pneumo.app import auth, intake, records, review_page, reviews, session_export
from pneumo.app.classify import ImageResult
from pneumo.app.display import (
    describe_ood_score,
    display_label,
    download_pair,
    md,
    short_name,
)
from pneumo.app.settings import AppSettings
from pneumo.errors import PneumoError

TITLE = "Pneumonia screening on pediatric chest X-rays"
UPLOAD_TYPES = ["jpg", "jpeg", "png", "dcm", "dicom"]


@st.cache_resource(show_spinner="Loading the model (once per server)...")
def get_predictor(model_dir: str | None, backend: str):
    from pneumo.inference.engine import load_predictor

    return load_predictor(model_dir, backend=backend)


def get_cam(model_dir: str | None, backend: str):
    """The heatmaps come from the serving predictor itself: its exported graph has a class
    activation map output (``Predictor.heatmaps``), so no torch model is loaded beside it."""
    return get_predictor(model_dir, backend)


@st.cache_resource(show_spinner="Opening the patient database...")
def get_db(db: str | None):
    from pneumo.storage.db import open_database

    return open_database(db)


@st.cache_resource(show_spinner=False)
def get_films(db: str | None):
    """Where classified films are kept by content hash (PNEUMO_FILMS: a folder or the
    database), so the history can show them again."""
    from pneumo.storage.films import FilmStoreSettings, open_film_store

    return open_film_store(FilmStoreSettings.from_env(db), get_db(db))


@st.cache_resource(show_spinner=False)
def get_outbox(db: str | None):
    """The journal of submissions not yet in the database, and the thread that delivers them
    (one per server process)."""
    from pneumo.app.outbox import Courier, Outbox, default_outbox_dir

    outbox = Outbox(default_outbox_dir())
    factory = get_db(db)
    courier = Courier(lambda: records.deliver_pending(outbox=outbox, session_factory=factory))
    return outbox, courier


def pending_note(outbox, courier) -> None:
    """Bring this session's results up to date with what the outbox delivered, and say what
    still waits for the database."""
    for sub in st.session_state.submissions:
        if sub.outbox_key and any(r.store_error == records.PENDING for r in sub.results):
            records.apply_outcome(sub.results, outbox.outcome(sub.outbox_key))
    waiting = outbox.pending_results()
    if waiting:
        courier.nudge()
        st.info(
            f"{waiting} result{'s' if waiting != 1 else ''} waiting to be saved; they will be "
            "saved when the database is back (kept on this server until then)."
        )


def init_state() -> None:
    ss = st.session_state
    ss.setdefault("session_id", uuid.uuid4().hex)
    ss.setdefault("generation", 0)
    ss.setdefault("submissions", [])
    ss.setdefault("user", "")
    ss.setdefault("authenticated", False)


def new_session() -> None:
    """Forget this browser session's results; new widget keys empty the uploader and fields."""
    ss = st.session_state
    ss.generation += 1
    ss.submissions = []
    ss.session_id = uuid.uuid4().hex


def _secrets_files() -> list[str]:
    from streamlit import config

    return list(config.get_option("secrets.files") or [])


def password_gate(factory) -> bool:
    """Ask for the password before anything else when a hash is configured; refuse to serve
    when one may be configured but cannot be read. Returns whether the app is protected."""
    try:
        encoded = auth.configured_hash(st.secrets, _secrets_files())
    except auth.AuthConfigError as exc:
        st.title(TITLE)
        st.error(f"The app's password is configured but cannot be used: {exc}")
        st.stop()
    ss = st.session_state
    if encoded is None or ss.authenticated:
        return encoded is not None
    st.title(TITLE)
    with st.form("login"):
        user = st.text_input("User")
        password = st.text_input("Password", type="password")
        submitted = st.form_submit_button("Sign in")
    if submitted:
        try:
            ok = auth.verify_password(password, encoded)
        except auth.AuthConfigError as exc:
            st.error(str(exc))
            st.stop()
        user = user.strip()[:120]
        records.audit_login(session_factory=factory, session_id=ss.session_id, user=user, ok=ok)
        if ok:
            ss.authenticated = True
            ss.user = user
            st.rerun()
        st.error("Wrong password.")
    st.stop()


def show_result(r: ImageResult, heatmaps: bool, ood_cutoff: float | None = None) -> None:
    p = r.prediction
    with st.container(border=True):
        if r.error or p is None:
            st.error(md(r.error or f"{r.name}: not classified"))
            return
        cols = st.columns([1, 1, 1.3] if heatmaps else [1, 1.3])
        if r.thumbnail:
            cols[0].image(r.thumbnail, caption=md(r.name), width="stretch")
        if heatmaps:
            if r.heatmap:
                cols[1].image(
                    r.heatmap,
                    caption="Class activation map: regions behind the result",
                    width="stretch",
                )
            else:
                cols[1].caption(r.heatmap_note or "No heatmap for this image.")
        info = cols[-1]
        # a long name is cut in the heading (a long word breaks mid-word), whole in the caption
        shown, full = md(short_name(r.name)), md(r.name)
        if p.ood:
            info.subheader(f"{shown}: not diagnosed", help=full if shown != full else None)
            score = describe_ood_score(p.ood_score, ood_cutoff)
            info.warning(
                "This does not look like a chest X-ray (out of distribution): no diagnosis "
                f"is given ({md(p.ood_reason)}). {score}".rstrip()
            )
            if r.store_error:
                info.error(r.store_error)
            elif r.record_id is not None:
                info.caption(f"Saved as record {r.record_id} (not diagnosed).")
            return
        info.subheader(f"{shown}: {display_label(p.label)}", help=full if shown != full else None)
        info.markdown(
            f"**Confidence:** {p.confidence:.1%}  \n"
            f"**Normal:** {1 - p.probability:.1%} · **Pneumonia:** {p.probability:.1%}  \n"
            f"**Calibrated probability of pneumonia:** {p.probability:.3f}  \n"
            f"**Operating threshold:** {p.threshold:.3f}"
        )
        if p.uncertain:
            info.warning(
                "Uncertain: the probability lies close to the threshold. "
                "Review this image with particular care."
            )
        if r.store_error:
            info.error(r.store_error)
        elif r.record_id is not None:
            info.caption(f"Saved as record {r.record_id}.")


def classify_tab(settings: AppSettings, predictor, factory, heatmaps: bool) -> None:
    ss = st.session_state
    try:
        outbox, courier = get_outbox(settings.db)
        films = get_films(settings.db)
    except PneumoError as exc:
        st.error(f"Cannot classify: {exc}")
        return
    gen = ss.generation
    name = st.text_input("Patient name", key=f"patient_name_{gen}", max_chars=120)
    patient_id = st.text_input(
        "Patient ID",
        key=f"patient_id_{gen}",
        max_chars=64,
        help="Optional: the clinic's patient number.",
    )
    uploads = st.file_uploader(
        "Chest X-ray images (JPEG, PNG or DICOM)",
        type=UPLOAD_TYPES,
        accept_multiple_files=True,
        key=f"uploads_{gen}",
    )
    url = st.text_input(
        "Image URL", key=f"url_{gen}", help="http(s) only; private and local addresses are refused."
    )
    left, right = st.columns([1, 1])
    classify = left.button("Classify", type="primary", width="stretch")
    right.button("New session", on_click=new_session, width="stretch")

    if classify:
        try:
            patient = intake.read_patient(name, patient_id)
            items = intake.read_images(uploads or [], url, settings)
        except PneumoError as exc:  # no or a bad patient name, no images
            st.error(str(exc))
        else:
            with st.spinner(f"Classifying {len(items)} image(s)..."):
                cam = get_cam(settings.model_dir, settings.backend) if heatmaps else None
                sub = records.classify_and_store(
                    items=items,
                    patient=patient,
                    predictor=predictor,
                    session_factory=factory,
                    session_id=ss.session_id,
                    user=ss.user,
                    cam=cam,
                    settings=settings,
                    outbox=outbox,
                    films=films,
                )
            ss.submissions.append(sub)
    pending_note(outbox, courier)
    studies = review_states(factory)

    for sub in reversed(ss.submissions):
        ok = sum(r.prediction is not None for r in sub.results)
        st.markdown(
            f"#### Results for {md(sub.patient_name)}"
            + (f" (ID {md(sub.patient_id)})" if sub.patient_id else "")
        )
        st.caption(
            f"{ok} of {len(sub.results)} image(s) classified in {sub.seconds:.2f} s "
            f"with model {sub.model_version}."
        )
        ood = predictor.metadata.ood
        for r in sub.results:
            show_result(r, heatmaps, ood.cutoff if ood else None)
            if r.record_id in studies:
                with st.expander(
                    f"Clinician's review of {short_name(r.name)}: {studies[r.record_id].state}",
                    expanded=studies[r.record_id].state == "awaiting"
                    or r.record_id in ss.get("review_flash", {}),  # show "saved"
                ):
                    review_page.review_form(factory, studies[r.record_id], "result")
    if ss.submissions:
        export_buttons(factory, heatmaps)


def review_states(factory) -> dict:
    """The reviews of this session's stored results, and how many still await one."""
    ids = [r.record_id for sub in st.session_state.submissions for r in sub.results]
    try:
        studies = reviews.studies_by_id(
            session_factory=factory, record_ids=[i for i in ids if i is not None]
        )
    except PneumoError as exc:
        st.warning(str(exc))
        return {}
    review_page.awaiting_note(list(studies.values()))
    return studies


def export_buttons(factory, heatmaps: bool) -> None:
    """CSV and PDF of this session's results, built only when asked for (and audited then)."""
    ss = st.session_state
    submissions = list(ss.submissions)
    results = [r for sub in submissions for r in sub.results]
    session_id, user = ss.session_id, ss.user

    def build(kind: str):
        def make() -> bytes:
            records.audit_export(
                session_factory=factory,
                results=results,
                session_id=session_id,
                user=user,
                kind=kind,
            )
            if kind == "csv":
                return session_export.results_csv(submissions)
            return session_export.results_pdf(submissions, heatmaps=heatmaps)

        return make

    download_pair(
        build,
        ("Download CSV", "Download PDF report"),
        ("pneumo-results.csv", "pneumo-report.pdf"),
    )


def main() -> None:
    st.set_page_config(page_title="pneumo", layout="wide")
    init_state()
    try:
        settings = AppSettings.from_env()
        factory = get_db(settings.db)
    except PneumoError as exc:
        st.error(f"Cannot start: {exc}")
        st.stop()
    protected = password_gate(factory)

    st.title(TITLE)
    st.warning(session_export.DISCLAIMER)
    try:
        predictor = get_predictor(settings.model_dir, settings.backend)
    except PneumoError as exc:
        st.error(f"Cannot load the model: {exc}")
        st.stop()
    meta = predictor.metadata
    with st.sidebar:
        heatmaps = st.toggle("Show heatmaps", value=True, key="heatmaps")
        if heatmaps:
            get_cam(settings.model_dir, settings.backend)  # load now, not on the first click
        st.markdown(
            f"**Model:** {meta.backbone}  \n**Input:** {meta.data_config.input_size[1]}x"
            f"{meta.data_config.input_size[0]}  \n**Threshold:** {meta.threshold:.3f}  \n"
            f"**Uncertain band:** {meta.uncertain_band[0]:.2f} to {meta.uncertain_band[1]:.2f}"
        )
        st.caption(f"Model version: {meta.version}")
        if st.session_state.user:
            st.caption(f"Signed in as {st.session_state.user}")
        review_page.reviewer_field()
    tab_classify, tab_history, tab_agreement = st.tabs(["Classify", "Patient history", "Agreement"])
    with tab_classify:
        classify_tab(settings, predictor, factory, heatmaps)
    with tab_history:
        try:
            films = get_films(settings.db)
        except PneumoError as exc:
            st.error(f"Cannot open the film store: {exc}")
        else:
            review_page.history_tab(factory, films, protected, settings.max_pixels)
    with tab_agreement:
        review_page.agreement_tab(factory)
    st.caption(session_export.ATTRIBUTION)


main()
