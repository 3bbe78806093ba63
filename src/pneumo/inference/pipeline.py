"""The film pipeline: a file (or its bytes) -> grey picture -> input statistics -> network
input, built from the model's metadata alone. The Predictor, the app, the DICOM node, the Ray
decode tasks and the accuracy guard all prepare films through it, so they give the network the
same arrays and the out-of-distribution flag the same statistics. Picklable and without the
network: a Ray task or a worker process can carry it."""

from __future__ import annotations

import io
import logging
from dataclasses import astuple, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from pneumo.data.decode import FORMATS, is_dicom, load_grey_and_planes, read_bytes, to_grey
from pneumo.errors import ImageDecodeError, PneumoError
from pneumo.models.preprocess import preprocess

if TYPE_CHECKING:
    from pneumo.models.checkpoint import ModelMetadata

log = logging.getLogger(__name__)

COLOUR_CHROMA_LIMIT = 12.0
"""Mean chroma (distance from grey in YCbCr, 0..~180) above which an image is flagged as out of
distribution: X-rays are grey, even when saved as RGB (JPEG noise stays below about 3)."""
ASPECT_LIMIT = 4.0
"""Images whose longer side is more than this many times the shorter one are flagged as out of
distribution: chest films range from square to about 3:1 (the widest Kermany original)."""
CONTRAST_LIMIT = 8.0
"""Grey-level standard deviation (0..255) below which an image is flagged as out of
distribution: blank, uniform or washed-out pictures (chest films measured 27 and up)."""
_COLOUR_MODES = ("RGB", "RGBA", "P", "CMYK", "YCbCr", "LAB", "HSV")
_CHROMA_SIDE = 64


def colour_chroma(img: Image.Image) -> float:
    """Mean distance from grey of pixels sampled from ``img`` (0 for grey modes). Sampled, not
    averaged: a smoothed thumbnail turns colour noise grey."""
    if img.mode not in _COLOUR_MODES:
        return 0.0
    picture = img if img.mode == "YCbCr" else img.convert("RGB")  # YCbCr: read as it is
    small = picture.resize((_CHROMA_SIDE, _CHROMA_SIDE), Image.Resampling.NEAREST)
    ycc = np.asarray(small.convert("YCbCr"), dtype=np.float32)
    return float(np.hypot(ycc[..., 1] - 128.0, ycc[..., 2] - 128.0).mean())


def aspect_ratio(size: tuple[int, int]) -> float:
    """Longer side over shorter side (1 for a square)."""
    width, height = size
    return max(width, height) / max(1, min(width, height))


def grey_contrast(img: Image.Image) -> float:
    """Standard deviation of the grey levels of a small copy of ``img``."""
    small = img.convert("L").resize((_CHROMA_SIDE, _CHROMA_SIDE), Image.Resampling.BILINEAR)
    return float(np.asarray(small, dtype=np.float32).std())


@dataclass(frozen=True)
class InputStats:
    """What the decoded picture says about itself, apart from the network: a chest film is
    grey, has contrast, and is not a sliver."""

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

    def numbers(self) -> tuple[float, ...]:
        """The numeric statistics in field order (``header_reason`` apart): a row of a numeric
        column, for the Ray path."""
        return astuple(self)[:-1]

    @classmethod
    def from_numbers(cls, numbers, header_reason: str | None = None) -> InputStats:
        """The inverse of ``numbers``."""
        return cls(*map(float, numbers), header_reason=header_reason)


NUMBERS = len(fields(InputStats)) - 1
"""How many values ``InputStats.numbers`` gives."""


def _source_chroma(raw: bytes, name: str, planes: Image.Image | None = None) -> float:
    """Chroma of an encoded image: from ``planes`` when its grey decode kept them (a YCbCr
    JPEG), else without a full decode: JPEGs are decoded at 1/2 to 1/8 scale, grey files (most
    X-rays) stop after the header; colour DICOM pixels are decoded again in colour (grey
    decoding has averaged the channels). A failure is that image's error, never a silent 0 that
    would switch the colour check off for it."""
    try:
        if planes is not None:
            return colour_chroma(planes)
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


@dataclass(frozen=True)
class Film:
    """One film as the model takes it."""

    picture: Image.Image
    """Grey, at the draft size (never smaller than the model input): what heatmaps draw on."""
    array: np.ndarray
    """The network input (3, H, W), float32."""
    stats: InputStats
    """What the out-of-distribution flag reads besides the network's features."""


@dataclass(frozen=True)
class PreparedFilm:
    """A film ready for the network, or why it is not: exactly one of ``array`` and ``error``
    is set. Holds no picture, so a queue of them stays small."""

    name: str
    array: np.ndarray | None = None
    stats: InputStats | None = None
    error: str | None = None


@dataclass(frozen=True)
class FilmPipeline:
    """Decode, measure and preprocess films as one model takes them (its data config from the
    metadata, its layout tensors for the layout check)."""

    metadata: ModelMetadata
    layouts: dict[str, np.ndarray] = field(default_factory=dict, compare=False)
    """The pixel layout checks' tensors (mean training layout, layout subspace) as float32;
    empty for a model without them."""

    @classmethod
    def of(cls, metadata: ModelMetadata, ood_tensors: dict[str, np.ndarray]) -> FilmPipeline:
        """The pipeline of a model whose ``ood.*`` tensors are ``ood_tensors`` (only the
        layout tensors are kept: the feature statistics belong to the network's side)."""
        from pneumo.models.ood import LAYOUT_BASIS_KEY, LAYOUT_KEY

        layouts = {
            key: np.asarray(ood_tensors[key], dtype=np.float32)
            for key in (LAYOUT_KEY, LAYOUT_BASIS_KEY)
            if key in ood_tensors
        }
        return cls(metadata, layouts)

    @classmethod
    def load(cls, model_dir: str | Path) -> FilmPipeline:
        """The pipeline of the model in ``model_dir``, without loading its network."""
        from pneumo.inference.engine import read_ood_tensors
        from pneumo.models.checkpoint import read_metadata

        return cls.of(read_metadata(model_dir), read_ood_tensors(model_dir))

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the network input."""
        h, w = self.metadata.data_config.input_size
        return (h, w)

    @property
    def draft_size(self) -> tuple[int, int]:
        """(width, height) for JPEG draft decoding: never smaller than the model input."""
        h, w = self.input_size
        return (w, h)

    @property
    def layout_template(self) -> np.ndarray | None:
        """The mean training film's coarse layout (``pneumo.models.ood``), if stored."""
        from pneumo.models.ood import LAYOUT_KEY

        return self.layouts.get(LAYOUT_KEY)

    def preprocess(self, img: Image.Image) -> np.ndarray:
        """Decoded grey picture -> network input (3, H, W), from the model's data config."""
        return preprocess(img, self.metadata.data_config)

    def stats(self, img: Image.Image, *, chroma: float | None = None) -> InputStats:
        """The statistics of a picture in any mode; ``chroma`` when measured elsewhere (on the
        encoded file, as grey decoding throws the colour away)."""
        from pneumo.models.ood import LAYOUT_BASIS_KEY, LAYOUT_KEY, layout_residuals, layout_vector

        grey = to_grey(img)
        layout, residual = 1.0, 0.0
        if self.layouts:
            vector = layout_vector(grey)
            if LAYOUT_KEY in self.layouts:
                layout = float(vector @ self.layouts[LAYOUT_KEY])
            if LAYOUT_BASIS_KEY in self.layouts:
                residual = float(layout_residuals(vector, self.layouts[LAYOUT_BASIS_KEY])[0])
        return InputStats(
            colour_chroma(img) if chroma is None else chroma,
            aspect_ratio(grey.size),
            grey_contrast(grey),
            layout,
            residual,
        )

    def decode(
        self, source: str | Path | bytes, name: str, *, max_pixels: int | None = None
    ) -> Film:
        """One film as this model takes it. Raises PneumoError with the reason for a film that
        cannot be used."""
        raw = read_bytes(source, name)  # read once: decoded to grey, then checked for colour
        limit = {} if max_pixels is None else {"max_pixels": max_pixels}
        grey, planes = load_grey_and_planes(
            raw, name=name, draft_size=self.draft_size, colour=True, **limit
        )
        stats = self.stats(grey, chroma=_source_chroma(raw, name, planes))
        if is_dicom(raw):
            from pneumo.data.dicom_scope import dicom_scope_problem

            stats = replace(stats, header_reason=dicom_scope_problem(raw, name))
        return Film(grey, self.preprocess(grey), stats)

    def prepare(self, source: str | Path | bytes, name: str) -> PreparedFilm:
        """``decode`` without the picture, and with a failure as that film's error, never an
        exception that would lose the films beside it."""
        try:
            film = self.decode(source, name)
        except PneumoError as exc:
            return PreparedFilm(name, error=str(exc))
        except Exception as exc:  # noqa: BLE001 - a bad file is an answer, not a crash
            log.warning("unexpected error decoding an image", exc_info=True)  # no name: PHI
            return PreparedFilm(name, error=f"{name}: {exc}")
        return PreparedFilm(name, film.array, film.stats)
