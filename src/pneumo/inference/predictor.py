"""The Predictor interface every caller uses (CLI, API, app, evaluation), and the prediction
record it answers with.

Backends only implement ``forward`` (a preprocessed batch to logits and pooled features); films
are prepared by the model's ``FilmPipeline`` (``pneumo.inference.pipeline``), and the batching,
calibration and out-of-distribution flags live here once, so every backend gives the same
answers for the same logits.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pneumo.data.decode import to_grey
from pneumo.errors import ModelError
from pneumo.inference.pipeline import FilmPipeline, InputStats, PreparedFilm, colour_chroma
from pneumo.models.outputs import temperature_softmax

if TYPE_CHECKING:
    from pneumo.inference.guard import GuardReport
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

NOT_ASSESSED = "not assessed"
"""What every face says in place of a diagnosis for a film flagged out of distribution."""


@dataclass(frozen=True)
class Column:
    """How a field of ``Prediction`` is written as a column of ``pneumo predict``'s output."""

    name: str
    """The column's header (users' scripts read these: never renamed)."""
    digits: int | None = None
    """Rounded to this many decimals."""
    escape: bool = False
    """Written printable (``pneumo.data.decode.printable``): free text that may hold any byte."""
    blank_unless: str | None = None
    """A ``Prediction`` property; the cell is empty where it is false (no uncertain flag for a
    film not assessed)."""


def _shown(default, doc: str, column: Column | None, *, api: str | None = None):
    """A field of the public record: its description (the API's too), its output column and
    its name in the API when that differs."""
    return field(default=default, metadata={"doc": doc, "column": column, "api": api})


@dataclass
class Prediction:
    """The answer for one image; ``error`` is set (and the rest None) when it could not be read.

    A film flagged out of distribution gets no diagnosis: ``label``, ``probability`` and
    ``confidence`` are None and ``ood_reason`` says why. Made once in ``Predictor.postprocess``
    so the CLI, the API, the app, its exports and the records all say the same. The one
    spelling of the record: the output columns (``pneumo.inference.rows``) and the API's
    result (``pneumo.api.schemas``) are built from these fields."""

    source: str = _shown(
        dataclasses.MISSING,
        "Name of the uploaded file.",
        Column("path"),  # names are made printable where they are made (``predict.Input``)
        api="filename",
    )
    label: str | None = _shown(
        None,
        "NORMAL or PNEUMONIA; null when not assessed (ood) or unreadable.",
        Column("class"),
    )
    probability: float | None = _shown(
        None,
        "Calibrated probability of PNEUMONIA; null when not assessed.",
        Column("probability", digits=6),
    )
    confidence: float | None = _shown(
        None, "Probability of the predicted class.", Column("confidence", digits=6)
    )
    threshold: float | None = _shown(None, "Decision threshold used.", None)
    uncertain: bool = _shown(
        False,
        "Probability in the model's uncertain band.",
        Column("uncertain", blank_unless="assessed"),
    )
    ood: bool = _shown(
        False,
        "Does not look like a chest X-ray of the training data: no diagnosis.",
        Column("ood", blank_unless="readable"),
    )
    ood_score: float | None = _shown(
        None, "Feature distance from the training data.", Column("ood_score", digits=4)
    )
    ood_reason: str | None = _shown(None, "Why the film was not assessed.", Column("ood_reason"))
    error: str | None = _shown(
        None, "Why this file could not be classified.", Column("error", escape=True)
    )
    model_probability: float | None = field(default=None, repr=False)
    """The network's calibrated p(PNEUMONIA) whatever the OOD flag, for evaluation, which
    measures the network on every film; never shown as a diagnosis (not in ``to_dict``)."""

    @property
    def readable(self) -> bool:
        """The film was read (it may still be out of distribution)."""
        return self.error is None

    @property
    def assessed(self) -> bool:
        """The film was read and diagnosed."""
        return self.error is None and not self.ood

    def to_dict(self) -> dict:
        """What may be shown (``shown_fields``), by field name."""
        return {f.name: getattr(self, f.name) for f in shown_fields()}


def shown_fields() -> list[dataclasses.Field]:
    """The fields of ``Prediction`` that may be shown, in order: all but
    ``model_probability``."""
    return [f for f in dataclasses.fields(Prediction) if "doc" in f.metadata]


def field_types() -> dict[str, type]:
    """Each field's value type, None stripped (``str | None`` -> ``str``)."""
    import typing

    hints = typing.get_type_hints(Prediction)
    return {
        name: next(t for t in typing.get_args(hint) if t is not type(None))
        if typing.get_args(hint)
        else hint
        for name, hint in hints.items()
    }


def single_threaded_blas() -> None:
    """Run numpy's BLAS on one thread in this process: its threads spin against the engine's
    own on the small OOD product (6.6 ms against 0.3 ms per batch of 8 on 2 busy cores), and the
    engine, not numpy, is what should own the cores (as torch.set_num_threads does for torch)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - installed with scikit-learn
        return
    threadpool_limits(1, user_api="blas")


def default_threads() -> int:
    """CPU cores this process may use (respects taskset and container CPU sets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


BATCH_SIZE = 8
"""Images per forward pass by default: on 2 CPU cores batch 8 runs as many images per second as
batch 32 (``benchmarks/``) with a quarter of the activation memory (about 250 vs 550 MiB peak
for ``pneumo predict``)."""


class Predictor(ABC):
    """Classifies chest X-rays. Implementations are created once and are thread-safe."""

    metadata: ModelMetadata
    ood_tensors: dict[str, np.ndarray]
    """Out-of-distribution statistics (``ood.*`` keys); empty when the model has none."""
    batch_size: int = BATCH_SIZE
    """Images per forward pass in ``predict_images`` and ``predict_sources``."""
    decode_workers: int = 2
    """Threads decoding and preprocessing files in ``predict_sources``."""
    backend: str = "?"
    """Short name of the backend for logs and the API (``openvino``, ``onnx`` or ``torch``)."""
    precision: str = "fp32"
    """Numeric precision the forward pass runs at (``fp32``, ``bf16`` or ``int8``)."""
    precision_guard: GuardReport | None = None
    """The accuracy guard's report for this model on this machine (OpenVINO), if it ran."""

    def __init__(
        self,
        metadata: ModelMetadata,
        ood_tensors: dict[str, np.ndarray] | None = None,
        *,
        threads: int | None = None,
        batch_size: int = BATCH_SIZE,
        precision: str = "fp32",
    ):
        """What every backend keeps; decoding gets as many threads as the network."""
        self.metadata = metadata
        self.ood_tensors = ood_tensors or {}
        self.batch_size = batch_size
        self.precision = precision
        self.threads = threads or default_threads()
        self.decode_workers = self.threads

    @abstractmethod
    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Preprocessed float32 batch (N, 3, H, W) -> (logits (N, C), pooled features (N, D))."""

    def forward_maps(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Like ``forward``, plus the class activation maps (N, classes, h, w) of the last
        feature map (``pneumo.inference.export``)."""
        raise ModelError(f"the {self.backend} backend gives no class activation maps")

    def forward_again(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """fp32 (logits, features) of ``rows`` of the last batch this thread ran, from work
        kept from that run, or None when nothing was kept (a cascade then runs those films
        through its fp32 predictor whole)."""
        return None

    # --- shared logic -------------------------------------------------------------------------

    def heatmaps(self, images: list[Image.Image], targets: list[int]) -> list[np.ndarray]:
        """One map in [0, 1] per image (feature-map resolution) of the regions that argued for
        class index ``targets[i]``, from the network's own class activation map (the same map as
        torch Grad-CAM for this head, without torch). All zero: nothing argued for that class.
        Images are prepared as for classification; ``batch_size`` per forward pass."""
        from pneumo.inference.cam import class_map

        if len(images) != len(targets):
            raise ValueError("one target class per image")
        n_classes = len(self.metadata.class_names)
        for t in targets:
            if not 0 <= t < n_classes:
                raise ValueError(f"target class {t} out of range 0..{n_classes - 1}")
        out: list[np.ndarray] = []
        for start in range(0, len(images), self.batch_size):
            chunk = images[start : start + self.batch_size]
            batch = np.stack([self.preprocess(to_grey(img)) for img in chunk])
            _, _, maps = self.forward_maps(batch)
            out += [
                class_map(m[t])
                for m, t in zip(maps, targets[start : start + len(chunk)], strict=True)
            ]
        return out

    @property
    def pipeline(self) -> FilmPipeline:
        """How this model's films are decoded, measured and preprocessed (built from its
        metadata and layout tensors; built again when either is replaced)."""
        made = self.__dict__.get("_pipeline")
        if made is None or made[0] is not self.metadata or made[1] is not self.ood_tensors:
            pipeline = FilmPipeline.of(self.metadata, self.ood_tensors)
            made = (self.metadata, self.ood_tensors, pipeline)
            self.__dict__["_pipeline"] = made
        return made[2]

    @property
    def draft_size(self) -> tuple[int, int]:
        """The pipeline's (width, height) for JPEG draft decoding."""
        return self.pipeline.draft_size

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """Decoded grey picture -> model input (3, H, W), as the pipeline does it."""
        return self.pipeline.preprocess(img)

    @property
    def layout_template(self) -> np.ndarray | None:
        """The mean training film's coarse layout (``pneumo.models.ood``), if stored."""
        return self.pipeline.layout_template

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated p(PNEUMONIA) per row: softmax(logits / temperature)[:, 1]."""
        return temperature_softmax(logits, self.metadata.temperature)[:, 1]

    def ood_score(self, features: np.ndarray) -> np.ndarray | None:
        """Feature distance from the training data, or None when the model has no statistics."""
        if not self.ood_tensors:
            return None
        from pneumo.models.checkpoint import DEFAULT_K
        from pneumo.models.ood import ood_scores

        ood = self.metadata.ood
        return ood_scores(features, self.ood_tensors, k=ood.k if ood else DEFAULT_K)

    def postprocess(
        self,
        logits: np.ndarray,
        features: np.ndarray,
        names: list[str],
        stats: list[InputStats] | None = None,
    ) -> list[Prediction]:
        """Turn one forward pass into Predictions: threshold, uncertain band, OOD flags (far
        features, or input statistics no chest film has: colour, shape, no contrast)."""
        meta = self.metadata
        probs = self.probabilities(logits)
        scores = self.ood_score(features)
        cutoff = meta.ood.cutoff if meta.ood else None
        layout_cutoff = meta.ood.layout_cutoff if meta.ood else None
        residual_cutoff = meta.ood.layout_residual_cutoff if meta.ood else None
        lo, hi = meta.uncertain_band
        out = []
        for i, name in enumerate(names):
            p = float(probs[i])
            score = None if scores is None else float(scores[i])
            reasons = [] if stats is None else stats[i].reasons(layout_cutoff, residual_cutoff)
            if score is not None and cutoff is not None and score > cutoff:
                reasons.append("features far from the training films")
            if reasons:  # no diagnosis, in any form, for a film the model was not made for
                out.append(
                    Prediction(
                        source=name,
                        threshold=meta.threshold,
                        ood=True,
                        ood_score=score,
                        ood_reason=f"{NOT_ASSESSED}: {', '.join(reasons)}",
                        model_probability=p,
                    )
                )
                continue
            positive = p >= meta.threshold
            out.append(
                Prediction(
                    source=name,
                    label=meta.class_names[1 if positive else 0],
                    probability=p,
                    confidence=p if positive else 1.0 - p,
                    threshold=meta.threshold,
                    uncertain=bool(lo <= p <= hi),
                    ood_score=score,
                    model_probability=p,
                )
            )
        return out

    def predict_arrays(
        self,
        arrays: np.ndarray,
        names: list[str],
        stats: list[InputStats] | None = None,
    ) -> list[Prediction]:
        """Classify preprocessed inputs (N, 3, H, W), ``batch_size`` at a time; the ``stats``
        of the original images feed the out-of-distribution flag."""
        out: list[Prediction] = []
        for start in range(0, len(names), self.batch_size):
            stop = start + self.batch_size
            batch = np.ascontiguousarray(arrays[start:stop], dtype=np.float32)
            logits, features = self.forward(batch)
            out += self.postprocess(
                logits,
                features,
                names[start:stop],
                None if stats is None else stats[start:stop],
            )
        return out

    def predict_images(
        self, images: list[Image.Image], names: list[str] | None = None
    ) -> list[Prediction]:
        """Classify decoded images (any PIL mode; colour images are flagged as OOD)."""
        names = list(names) if names is not None else [f"image{i}" for i in range(len(images))]
        if len(names) != len(images):
            raise ValueError(f"{len(images)} images but {len(names)} names")
        if not images:
            return []
        pipeline = self.pipeline
        greys = [to_grey(img) for img in images]
        stats = [
            pipeline.stats(g, chroma=colour_chroma(img))
            for g, img in zip(greys, images, strict=True)
        ]
        arrays = np.stack([pipeline.preprocess(g) for g in greys])
        return self.predict_arrays(arrays, names, stats)

    def predict_prepared(self, films: list[PreparedFilm]) -> list[Prediction]:
        """Classify films the pipeline prepared, in order; one that could not be prepared
        gets its error."""
        out: list[Prediction | None] = [
            Prediction(source=f.name, error=f.error) if f.error is not None else None for f in films
        ]
        good = [i for i, f in enumerate(films) if f.error is None]
        if good:
            answers = self.predict_arrays(
                np.stack([films[i].array for i in good]),
                [films[i].name for i in good],
                [films[i].stats for i in good],
            )
            for i, answer in zip(good, answers, strict=True):
                out[i] = answer
        return out  # type: ignore[return-value]

    def iter_predict_sources(
        self,
        sources: Iterable[str | Path | bytes],
        names: Iterable[str] | None = None,
    ) -> Iterator[list[Prediction]]:
        """Like ``predict_sources`` but yields one list per batch, in input order, as soon as it
        is ready. ``sources`` may be any iterable (a generator over a huge folder): it is read
        only as far as the pipeline needs. Decoding runs in ``decode_workers`` threads, at most
        two batches ahead of the network, so memory stays flat and decoders that are ahead sleep
        instead of taking cores from the network."""
        prepare = self.pipeline.prepare
        if isinstance(sources, list | tuple):
            if names is not None and len(names) != len(sources):  # type: ignore[arg-type]
                raise ValueError(f"{len(sources)} sources but {len(names)} names")  # type: ignore[arg-type]
            if len(sources) == 1:  # the common API request: no thread pool to start
                only = next(iter(names)) if names is not None else _name_of(sources[0])
                yield self.predict_prepared([prepare(sources[0], only)])
                return
        items = (
            zip(sources, names, strict=True)
            if names is not None
            else ((s, _name_of(s)) for s in sources)
        )
        lookahead = 2 * self.batch_size
        with ThreadPoolExecutor(max(1, self.decode_workers), "pneumo-decode") as pool:
            pending: deque[Future[PreparedFilm]] = deque()

            def fill():
                for source, name in items:
                    pending.append(pool.submit(prepare, source, name))
                    if len(pending) >= lookahead:
                        return

            fill()
            while pending:
                films = []
                while pending and len(films) < self.batch_size:
                    films.append(pending.popleft().result())
                    fill()
                yield self.predict_prepared(films)

    def predict_sources(
        self,
        sources: list[str | Path | bytes],
        names: list[str] | None = None,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> list[Prediction]:
        """Decode and classify files or bytes; a bad item gets ``error`` set, never an
        exception that loses the others. ``progress(n)`` is called after each batch of n."""
        out: list[Prediction] = []
        for chunk in self.iter_predict_sources(sources, names):
            out += chunk
            if progress is not None:
                progress(len(chunk))
        return out


def _name_of(source: str | Path | bytes) -> str:
    if isinstance(source, bytes):
        return "<bytes>"
    return source if isinstance(source, str) else str(source)
