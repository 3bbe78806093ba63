"""Pictures that are not frontal chest films, for the out-of-distribution check: grey
photographs, documents, textures, microscopy, faces, rendered screenshots, and other radiology
(CT and MR slices exported as pictures, a head phantom). All come from installed packages
(scikit-image, pydicom) or are drawn here: nothing is downloaded, no shared film is copied."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image, ImageDraw

PHOTOGRAPHS = (
    "camera", "coins", "moon", "page", "text", "horse", "clock", "brick", "grass", "gravel",
    "checkerboard", "cell", "microaneurysms", "astronaut", "coffee", "rocket", "chelsea",
    "hubble_deep_field", "immunohistochemistry", "logo",
)  # fmt: skip
SLICES = ("CT_small.dcm", "MR_small.dcm")


def as_picture(array) -> Image.Image:
    """Any 2-D array as an 8-bit grey picture (1-99% window), as a viewer would export it."""
    a = np.asarray(array, dtype=np.float64)
    lo, hi = np.percentile(a, [1, 99])
    return Image.fromarray((255 * np.clip((a - lo) / max(hi - lo, 1e-9), 0, 1)).astype(np.uint8))


def screenshot(seed: int, dark: bool = False) -> Image.Image:
    """A rendered application window: a title bar, rows of text and a panel."""
    rng = np.random.default_rng(seed)
    img = Image.new("L", (1024, 700), 30 if dark else 235)
    draw = ImageDraw.Draw(img)
    draw.rectangle([0, 0, 1024, 48], fill=200 if dark else 60)
    for row in range(25):
        text = "Patient list  " + "x" * int(rng.integers(5, 60))
        draw.text((30, 70 + 24 * row), text, fill=220 if dark else 20)
    draw.rectangle([600, 100, 980, 600], outline=255 if dark else 0, width=3)
    return img


def pictures() -> dict[str, Image.Image]:
    """Name -> grey picture, every one something the model was not made for."""
    import pydicom
    import skimage.data
    from pydicom.data import get_testdata_file

    out = {}
    for name in PHOTOGRAPHS:
        a = np.asarray(getattr(skimage.data, name)())
        a = a.astype(np.uint8) * 255 if a.dtype == bool else a
        out[name] = (Image.fromarray(a) if a.dtype == np.uint8 else as_picture(a)).convert("L")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in SLICES:
            out[name] = as_picture(pydicom.dcmread(get_testdata_file(name)).pixel_array)
    out["head phantom"] = as_picture(skimage.data.shepp_logan_phantom())
    for i, face in enumerate(skimage.data.lfw_subset()[:4]):
        out[f"face {i}"] = as_picture(face).resize((200, 200))
    out["screenshot"] = screenshot(0)
    out["dark screenshot"] = screenshot(1, dark=True)
    return out
