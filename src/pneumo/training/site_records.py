"""The films clinicians reviewed in the app, as a labeled site set for ``adapt``: the
clinicians' shared finding is each film's label (NORMAL or PNEUMONIA; films found not
assessable, disputed ones and ones whose film was not kept are left out and counted). The
films are written to a temporary NORMAL/ and PNEUMONIA/ folder and adapted exactly as
``adapt --images`` would, with the same refusals; the model's provenance names the records."""

from __future__ import annotations

import getpass
import logging
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from pneumo import CLASS_NAMES
from pneumo.errors import DataError
from pneumo.training.adapt import MIN_PER_CLASS, AdaptResult, adapt

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReviewedFilm:
    """One reviewed record usable as a labeled film."""

    record_id: int
    sha256: str
    label: str
    """The clinicians' finding: NORMAL or PNEUMONIA."""


def reviewed_films(session_factory) -> tuple[list[ReviewedFilm], Counter]:
    """The records whose current reviews share a finding of NORMAL or PNEUMONIA, oldest first,
    and how many reviewed records were left out, by reason."""
    from pneumo.storage.reviews import reviewed_records

    films, left_out = [], Counter()
    with session_factory() as s:
        for record, state in reviewed_records(s):
            if state.finding in CLASS_NAMES:
                films.append(ReviewedFilm(record.id, record.sha256, state.finding))
            else:
                left_out["disputed" if state.finding is None else "not assessable"] += 1
    return films, left_out


def _check_counts(counts: Counter, where: str) -> None:
    """The refusal of ``adapt`` for too few labeled films, in terms of reviews."""
    if any(counts[n] < MIN_PER_CLASS for n in CLASS_NAMES):
        have = ", ".join(f"{counts[n]} {n}" for n in CLASS_NAMES)
        raise DataError(
            f"{where}: too few reviewed films to refit the threshold ({have}); need at least "
            f"{MIN_PER_CLASS} of each class, by the clinicians' finding"
        )


def adapt_from_records(
    *,
    db: str,
    output: Path,
    model: Path | None = None,
    films: str | None = None,
    target_sensitivity: float = 0.95,
    workers: int = 2,
) -> AdaptResult:
    """Adapt a model to the films clinicians reviewed in the app (the records database DB and
    its film store, --films or $PNEUMO_FILMS or films/ beside a SQLite file), with each film
    labeled by the clinicians' finding, as `adapt --images` does for NORMAL/ and PNEUMONIA/
    folders. The adapted model's model.json names the records it was fit on; the use of the
    films is written to the audit trail."""
    from pneumo.storage import repository as repo
    from pneumo.storage.db import database_url, open_database, redact
    from pneumo.storage.films import FilmStoreSettings, open_film_store

    url = database_url(db)
    where = f"reviewed records in {redact(url)}"
    factory = open_database(db)
    try:
        settings = FilmStoreSettings.from_env(db)
        if films:
            settings = FilmStoreSettings(location=films, max_mb=settings.max_mb)
        store = open_film_store(settings, factory)
        reviewed, left_out = reviewed_films(factory)
        with tempfile.TemporaryDirectory(prefix="pneumo-site-") as tmp:
            used = _write_films(reviewed, store, Path(tmp), left_out)
            counts = Counter(f.label for f in used)
            _check_counts(counts, where)
            provenance = {
                "source": "reviewed records",
                "database": redact(url),
                "records": {n: [f.record_id for f in used if f.label == n] for n in CLASS_NAMES},
                "left_out": dict(left_out),
            }
            try:
                result = adapt(
                    model=model,
                    images=Path(tmp),
                    output=output,
                    target_sensitivity=target_sensitivity,
                    workers=workers,
                    provenance=provenance,
                )
            except DataError as exc:  # its messages name the temporary folder
                raise DataError(str(exc).replace(tmp, where)) from None
        with factory() as s:
            ids = ",".join(str(f.record_id) for f in used)
            repo.add_audit(
                s,
                action="adapt",
                session_id="cli",
                user=getpass.getuser(),
                detail=f"{len(used)} reviewed films -> {output}; records {ids}",
            )
            s.commit()
    finally:
        factory.kw["bind"].dispose()
    log.info("adapted on %d reviewed films (%s)", len(used), dict(counts))
    return result


def _write_films(reviewed, store, folder: Path, left_out: Counter) -> list[ReviewedFilm]:
    """Each reviewed film into ``folder/<label>/record-<id><suffix>``; films the store does not
    hold are left out (counted in ``left_out``)."""
    from pneumo.storage.films import film_suffix

    for name in CLASS_NAMES:
        (folder / name).mkdir()
    used = []
    for film in reviewed:
        data = store.get(film.sha256)
        if data is None:
            left_out["film not kept"] += 1
            continue
        path = folder / film.label / f"record-{film.record_id}{film_suffix(data)}"
        path.write_bytes(data)
        used.append(film)
    if left_out["film not kept"]:
        log.warning(
            "%d reviewed film(s) are not in the film store: left out", left_out["film not kept"]
        )
    return used
