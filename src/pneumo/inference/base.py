"""The Predictor interface every caller uses (CLI, API, app, evaluation), and its result type.

Backends only implement ``forward`` (a preprocessed batch to logits and pooled features); the
decoding, batching, calibration and out-of-distribution flags live here once, so every backend
gives the same answers for the same logits.
"""

from __future__ import annotations

import io
import logging
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pneumo.data.decode import FORMATS, is_dicom, load_grey, read_bytes, to_grey
from pneumo.errors import ImageDecodeError, ModelError, PneumoError
from pneumo.models.outputs import temperature_softmax
from pneumo.models.preprocess import preprocess

if TYPE_CHECKING:
    from pneumo.inference.guard import GuardReport
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

COLOUR_CHROMA_LIMIT = 12.0
"""Mean chroma (distance from grey in YCbCr, 0..~180) above which an image is flagged as out of
distribution: X-rays are grey, even when saved as RGB (JPEG noise stays below about 3)."""
_COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV")


NOT_ASSESSED = "not assessed"
"""What every face says in place of a diagnosis for a film flagged out of distribution."""


@dataclass
class Prediction:
    """The answer for one image; ``error`` is set (and the rest None) when it could not be read.

    A film flagged out of distribution gets no diagnosis: ``label``, ``probability`` and
    ``confidence`` are None and ``ood_reason`` says why. Made once in ``Predictor.postprocess``
    so the CLI, the API, the app, its exports and the records all say the same."""

    source: str
    """File path, upload name or URL."""
    label: str | None = None
    """Predicted class name (NORMAL or PNEUMONIA); None when not assessed or unreadable."""
    probability: float | None = None
    """Calibrated probability of PNEUMONIA; None when not assessed or unreadable."""
    confidence: float | None = None
    """Calibrated probability of the predicted class."""
    threshold: float | None = None
    """The operating threshold the label was decided at."""
    uncertain: bool = False
    """The probability lies in the model's uncertain band around the threshold."""
    ood: bool = False
    """The image does not look like a chest X-ray of the training distribution: no diagnosis."""
    ood_score: float | None = None
    """Feature distance from the training data (the cut-off is in the model metadata)."""
    ood_reason: str | None = None
    """Why the film was not assessed (``ood``): which checks flagged it."""
    error: str | None = None
    """Why this image could not be classified."""
    model_probability: float | None = field(default=None, repr=False)
    """The network's calibrated p(PNEUMONIA) whatever the OOD flag, for evaluation, which
    measures the network on every film; never shown as a diagnosis (not in ``to_dict``)."""

    def to_dict(self) -> dict:
        """What may be shown: every field but ``model_probability``."""
        out = asdict(self)
        del out["model_probability"]
        return out


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

ASPECT_LIMIT = 4.0
"""Images whose longer side is more than this many times the shorter one are flagged as out of
distribution: chest films range from square to about 3:1 (the widest Kermany original)."""
_CHROMA_SIDE = 64


def colour_chroma(img: Image.Image) -> float:
    """Mean distance from grey of pixels sampled from ``img`` (0 for grey modes). Sampled, not
    averaged: a smoothed thumbnail turns colour noise grey."""
    if img.mode not in _COLOUR_MODES:
        return 0.0
    small = img.convert("RGB").resize((_CHROMA_SIDE, _CHROMA_SIDE), Image.Resampling.NEAREST)
    ycc = np.asarray(small.convert("YCbCr"), dtype=np.float32)
    return float(np.hypot(ycc[..., 1] - 128.0, ycc[..., 2] - 128.0).mean())


def aspect_ratio(size: tuple[int, int]) -> float:
    """Longer side over shorter side (1 for a square)."""
    width, height = size
    return max(width, height) / max(1, min(width, height))


CONTRAST_LIMIT = 8.0
"""Grey-level standard deviation (0..255) below which an image is flagged as out of
distribution: blank, uniform or washed-out pictures (chest films measured 27 and up)."""


def grey_contrast(img: Image.Image) -> float:
    """Standard deviation of the grey levels of a small copy of ``img``."""
    small = img.convert("L").resize((_CHROMA_SIDE, _CHROMA_SIDE), Image.Resampling.BILINEAR)
    return float(np.asarray(small, dtype=np.float32).std())


@dataclass(frozen=True)
class InputStats:
    """What the decoded picture says about itself, apart from the model: a chest film is grey,
    has contrast, and is not a sliver."""

    chroma: float = 0.0
    """Mean distance from grey (``colour_chroma``)."""
    aspect: float = 1.0
    """Longer over shorter side."""
    contrast: float = 255.0
    """Grey-level standard deviation (``grey_contrast``)."""
    layout: float = 1.0
    """Correlation of the coarse layout with the model's mean training film (1 when the model
    has no layout template)."""
    layout_residual: float = 0.0
    """Distance of the coarse layout from the training films' layout subspace (0 when the
    model has none)."""
    header_reason: str | None = None
    """What the file's own header says it is when that is not a frontal chest radiograph (a
    DICOM CT slice, a report, a lateral view: ``pneumo.data.dicom_scope``); None otherwise."""

    @property
    def odd(self) -> bool:
        """Out of distribution on its own statistics (the model's layout cut-off aside)."""
        return bool(self.reasons())

    def reasons(
        self, layout_cutoff: float | None = None, residual_cutoff: float | None = None
    ) -> list[str]:
        """What no chest film is, in words (empty for a plausible film); the cut-offs are the
        model's (``OodConfig.layout_cutoff``, ``OodConfig.layout_residual_cutoff``)."""
        out = [self.header_reason] if self.header_reason else []
        if (layout_cutoff is not None and self.layout < layout_cutoff) or (
            residual_cutoff is not None and self.layout_residual > residual_cutoff
        ):
            out.append("not laid out like a chest film")
        if self.chroma > COLOUR_CHROMA_LIMIT:
            out.append("a colour image")
        if self.aspect > ASPECT_LIMIT:
            out.append(f"a shape beyond {ASPECT_LIMIT:g}:1")
        if self.contrast < CONTRAST_LIMIT:
            out.append("blank or washed out")
        return out

    @classmethod
    def of(cls, grey: Image.Image, chroma: float, layouts: dict | None = None) -> InputStats:
        """The statistics of a grey picture; ``layouts`` holds the model's layout tensors
        (``Predictor.layout_tensors``: mean training layout, layout subspace)."""
        from pneumo.models.ood import (
            LAYOUT_BASIS_KEY,
            LAYOUT_KEY,
            layout_residuals,
            layout_vector,
        )

        layout, residual = 1.0, 0.0
        if layouts:
            vector = layout_vector(grey)
            if LAYOUT_KEY in layouts:
                layout = float(vector @ layouts[LAYOUT_KEY])
            if LAYOUT_BASIS_KEY in layouts:
                residual = float(layout_residuals(vector, layouts[LAYOUT_BASIS_KEY])[0])
        return cls(chroma, aspect_ratio(grey.size), grey_contrast(grey), layout, residual)

    @classmethod
    def of_encoded(
        cls, grey: Image.Image, raw: bytes, name: str, layouts: dict | None = None
    ) -> InputStats:
        """The statistics of a decoded film, the colour measured on its encoded bytes (grey
        decoding has already thrown the colour away), with what a DICOM header says it is."""
        stats = cls.of(grey, _source_chroma(raw, name), layouts)
        if is_dicom(raw):
            from pneumo.data.dicom_scope import dicom_scope_problem

            return replace(stats, header_reason=dicom_scope_problem(raw, name))
        return stats


def _source_chroma(raw: bytes, name: str) -> float:
    """Chroma of an encoded image without a full decode: JPEGs are decoded at 1/2 to 1/8 scale,
    grey files (most X-rays) stop after the header; colour DICOM pixels are decoded again in
    colour (grey decoding has averaged the channels). A failure is that image's error, never a
    silent 0 that would switch the colour check off for it."""
    try:
        if is_dicom(raw):
            from pneumo.data.dicom import colour_picture

            picture = colour_picture(raw, name)
            return 0.0 if picture is None else colour_chroma(picture)
        with Image.open(io.BytesIO(raw), formats=FORMATS) as img:
            if img.mode not in _COLOUR_MODES:
                return 0.0
            if img.format in ("JPEG", "MPO"):
                img.draft("RGB", (4 * _CHROMA_SIDE, 4 * _CHROMA_SIDE))
            return colour_chroma(img)
    except Exception as exc:  # noqa: BLE001 - any decoder failure, reported for this image
        raise ImageDecodeError(name, f"colour check failed ({type(exc).__name__})") from None


def _name_of(source: str | Path | bytes) -> str:
    if isinstance(source, bytes):
        return "<bytes>"
    return source if isinstance(source, str) else str(source)


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
    def draft_size(self) -> tuple[int, int]:
        """(width, height) for JPEG draft decoding: never smaller than the model input."""
        h, w = self.metadata.data_config.input_size
        return (w, h)

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """Decoded image -> model input (3, H, W), from the model's own data config."""
        return preprocess(img, self.metadata.data_config)

    @property
    def layout_template(self) -> np.ndarray | None:
        """The mean training film's coarse layout (``pneumo.models.ood``), if stored."""
        from pneumo.models.ood import LAYOUT_KEY

        return self.layout_tensors.get(LAYOUT_KEY)

    @property
    def layout_tensors(self) -> dict[str, np.ndarray]:
        """The stored tensors of the pixel layout checks (mean training layout, layout
        subspace), as float32; empty for a model without them."""
        from pneumo.models.ood import LAYOUT_BASIS_KEY, LAYOUT_KEY

        return {
            key: np.asarray(self.ood_tensors[key], dtype=np.float32)
            for key in (LAYOUT_KEY, LAYOUT_BASIS_KEY)
            if key in self.ood_tensors
        }

    def probabilities(self, logits: np.ndarray) -> np.ndarray:
        """Calibrated p(PNEUMONIA) per row: softmax(logits / temperature)[:, 1]."""
        return temperature_softmax(logits, self.metadata.temperature)[:, 1]

    def ood_score(self, features: np.ndarray) -> np.ndarray | None:
        """Feature distance from the training data, or None when the model has no statistics."""
        if not self.ood_tensors:
            return None
        from pneumo.models.ood import ood_scores

        ood = self.metadata.ood
        return ood_scores(features, self.ood_tensors, k=ood.k if ood else 10)

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
        greys = [to_grey(img) for img in images]
        layouts = self.layout_tensors
        stats = [
            InputStats.of(g, colour_chroma(img), layouts)
            for g, img in zip(greys, images, strict=True)
        ]
        arrays = np.stack([self.preprocess(g) for g in greys])
        return self.predict_arrays(arrays, names, stats)

    def decode(
        self, source: str | Path | bytes, name: str, *, max_pixels: int | None = None
    ) -> tuple[Image.Image, np.ndarray, InputStats]:
        """One film as this model takes it: the grey picture (at the draft size), the network
        input and the statistics the out-of-distribution flag reads. Raises PneumoError with
        the reason for a film that cannot be used."""
        raw = read_bytes(source, name)  # read once: decoded to grey, then checked for colour
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        img = load_grey(raw, name=name, draft_size=self.draft_size, **limit)
        return (
            img,
            self.preprocess(img),
            InputStats.of_encoded(img, raw, name, self.layout_tensors),
        )

    def _load(self, source: str | Path | bytes, name: str) -> tuple[np.ndarray, InputStats]:
        _, array, stats = self.decode(source, name)
        return array, stats

    def _predict_one(self, source: str | Path | bytes, name: str) -> list[Prediction]:
        try:
            arr, stats = self._load(source, name)
        except PneumoError as exc:
            return [Prediction(source=name, error=str(exc))]
        except Exception as exc:  # noqa: BLE001 - a bad file is an answer, not a crash
            log.warning("unexpected error decoding an image", exc_info=True)  # no name: PHI
            return [Prediction(source=name, error=f"{name}: {exc}")]
        return self.predict_arrays(arr[None], [name], [stats])

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
        if isinstance(sources, list | tuple):
            if names is not None and len(names) != len(sources):  # type: ignore[arg-type]
                raise ValueError(f"{len(sources)} sources but {len(names)} names")  # type: ignore[arg-type]
            if len(sources) == 1:  # the common API request: no thread pool to start
                only = next(iter(names)) if names is not None else _name_of(sources[0])
                yield self._predict_one(sources[0], only)
                return
        items = (
            zip(sources, names, strict=True)
            if names is not None
            else ((s, _name_of(s)) for s in sources)
        )
        lookahead = 2 * self.batch_size
        with ThreadPoolExecutor(max(1, self.decode_workers), "pneumo-decode") as pool:
            pending: deque[tuple[str, Future]] = deque()

            def fill():
                for source, name in items:
                    pending.append((name, pool.submit(self._load, source, name)))
                    if len(pending) >= lookahead:
                        return

            fill()
            while pending:
                chunk: list[Prediction | None] = []
                arrays, stats, slots, good_names = [], [], [], []
                while pending and len(chunk) < self.batch_size:
                    name, fut = pending.popleft()
                    try:
                        arr, st = fut.result()
                    except PneumoError as exc:
                        chunk.append(Prediction(source=name, error=str(exc)))
                        continue
                    except Exception as exc:  # noqa: BLE001 - one bad file must not stop the rest
                        log.warning("unexpected error decoding an image", exc_info=True)
                        chunk.append(Prediction(source=name, error=f"{name}: {exc}"))
                        continue
                    finally:
                        fill()
                    slots.append(len(chunk))
                    chunk.append(None)
                    arrays.append(arr)
                    stats.append(st)
                    good_names.append(name)
                if arrays:
                    preds = self.predict_arrays(np.stack(arrays), good_names, stats)
                    for slot, pred in zip(slots, preds, strict=True):
                        chunk[slot] = pred
                yield chunk  # type: ignore[misc]

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
