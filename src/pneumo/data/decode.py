"""Decode any supported X-ray file (JPEG, PNG, DICOM; grey, RGB, RGBA, palette, 16-bit) into one
consistent, upright 8-bit image, with the checks a server needs against hostile input: only
regular files are read, with a size cap checked before reading; formats are told apart by
content, never by name; dimensions are checked before decoding (bombs, deflated DICOM too); and
concurrent decodes share one memory budget."""

from __future__ import annotations

import io
import os
import stat
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from pneumo.errors import ImageDecodeError
from pneumo.limits import DECODE_BUDGET_MIB, MAX_FILE_BYTES, MAX_PIXELS, MiB

IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
DICOM_SUFFIXES = (".dcm", ".dicom")
MIN_SIDE = 16
"""Smaller images cannot be X-rays worth classifying."""
FORMATS = ("JPEG", "PNG", "TIFF", "BMP", "WEBP")
"""The Pillow formats opened; others (EPS, which runs Ghostscript, PSD, ICO ...) are refused."""
MAX_JPEG_SCANS = 100
"""Most start-of-scan markers in a JPEG: progressive files have about 10, and each extra scan is
one more pass over every pixel (a small file with thousands of scans decodes for minutes)."""

Source = str | Path | bytes | bytearray | memoryview


def mib(nbytes: float) -> str:
    """A size in the one unit every size message and limit of pneumo uses: MiB (2**20 bytes),
    e.g. ``20 MiB`` or ``20.25 MiB``: saying MB for the file and MiB for the limit gave two
    numbers for the same size."""
    return f"{nbytes / 2**20:.2f}".rstrip("0").rstrip(".") + " MiB"


_CONTROL = {c: f"\\x{c:02x}" for c in (*range(32), 127)}


def printable(text: str) -> str:
    """``text`` with bytes that are not UTF-8 (file names are bytes on Linux) and control
    characters (NUL, newline, terminal escapes) written as ``\\xff`` escapes, so that it can go
    to a UTF-8 CSV, JSON, terminal or log as one line."""
    text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return text.translate(_CONTROL)


def _name(source: Source, name: str | None) -> str:
    if name:
        return name
    return "<bytes>" if isinstance(source, bytes | bytearray | memoryview) else str(source)


def _file_kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _open_regular(path: Path, label: str, max_bytes: int) -> tuple[int, int]:
    """Open ``path`` for reading if it is a regular file (symlinks followed) no larger than
    ``max_bytes``; returns (fd, size). Devices, FIFOs and sockets are refused without reading
    (``/dev/zero`` never ends, a FIFO blocks forever)."""
    try:
        st = os.stat(path)
        if stat.S_ISDIR(st.st_mode):
            raise ImageDecodeError(label, "is a directory, not an image")
        if not stat.S_ISREG(st.st_mode):
            raise ImageDecodeError(
                label, f"{_file_kind(st.st_mode)}, not a regular file: only files are read"
            )
        # O_NONBLOCK: should the path turn into a FIFO after the check, open must not block
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except ImageDecodeError:
        raise
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except PermissionError:
        raise ImageDecodeError(label, "permission denied") from None
    except (ValueError, UnicodeError):  # NUL byte or unencodable characters in the name
        raise ImageDecodeError(label, "invalid file name") from None
    except OSError as exc:
        raise ImageDecodeError(label, f"cannot read file ({exc.strerror or exc})") from None
    st = os.fstat(fd)
    problem = None
    if not stat.S_ISREG(st.st_mode):
        problem = f"{_file_kind(st.st_mode)}, not a regular file: only files are read"
    elif st.st_size > max_bytes:
        problem = f"file too large ({mib(st.st_size)}, limit {mib(max_bytes)})"
    elif st.st_size == 0:
        # nothing to read; and /proc files such as kmsg claim 0 bytes, then block when read
        problem = "empty file (0 bytes)"
    if problem:
        os.close(fd)
        raise ImageDecodeError(label, problem)
    return fd, st.st_size


def read_bytes(source: Source, label: str, max_bytes: int = MAX_FILE_BYTES) -> bytes:
    """The bytes of a path (or the bytes given), with missing, unreadable, special (device,
    FIFO, socket), empty and too large files as ImageDecodeError. Never reads more than
    ``max_bytes`` + 1 bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        fd, _ = _open_regular(Path(source), label, max_bytes)
        try:
            with os.fdopen(fd, "rb") as f:
                data = f.read(max_bytes + 1)  # the file may have grown since fstat
        except OSError as exc:
            raise ImageDecodeError(label, f"cannot read file ({exc.strerror or exc})") from None
    if not data:
        raise ImageDecodeError(label, "empty file (0 bytes)")
    if len(data) > max_bytes:
        raise ImageDecodeError(label, f"file too large (over {mib(max_bytes)})")
    return data


def is_dicom(data: bytes) -> bool:
    """DICOM Part 10 files carry 'DICM' after a 128-byte preamble (whatever their name)."""
    return len(data) >= 132 and data[128:132] == b"DICM"


_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"II*\x00", b"MM\x00*", b"BM")


def looks_like_image(head: bytes) -> bool:
    """Whether the first 132 bytes of a file are those of a supported image (DICOM, JPEG, PNG,
    TIFF, BMP, WebP): files are recognised by content, not by name (PACS exports have none)."""
    return (
        is_dicom(head) or head.startswith(_MAGIC) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")
    )


def sniff_file(path: str | Path) -> bool:
    """``looks_like_image`` on the start of a regular file; False for anything unreadable."""
    try:
        fd, _ = _open_regular(Path(path), str(path), MAX_FILE_BYTES)
    except ImageDecodeError:
        return False
    with os.fdopen(fd, "rb") as f:
        try:
            return looks_like_image(f.read(132))
        except OSError:
            return False


class _DecodeBudget:
    """A process-wide count of decoded bytes held at once: decodes wait their turn instead of
    holding many large images together. One decode larger than the budget runs alone."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0
        self._cond = threading.Condition()

    @contextmanager
    def hold(self, nbytes: int):
        nbytes = min(nbytes, self.limit)
        with self._cond:
            self._cond.wait_for(lambda: self.used + nbytes <= self.limit)
            self.used += nbytes
        try:
            yield
        finally:
            with self._cond:
                self.used -= nbytes
                self._cond.notify_all()


decode_budget = _DecodeBudget(int(DECODE_BUDGET_MIB * MiB))
"""Shared by every decode in this process (CLI threads, API requests, app sessions)."""


def _decoded_bytes(width: int, height: int, bytes_per_pixel: int) -> int:
    # stored pixels, the float32 or uint8 working copy, and the 8-bit result
    return width * height * (bytes_per_pixel + 2)


def check_size(width: int, height: int, label: str, max_pixels: int) -> None:
    """Refuse absurd dimensions before any pixel is decoded (bombs) and thumbnails."""
    if width * height > max_pixels:
        raise ImageDecodeError(
            label, f"image too large ({width}x{height} pixels, limit {max_pixels:,})"
        )
    if min(width, height) < MIN_SIDE:
        raise ImageDecodeError(label, f"image too small ({width}x{height} pixels)")


def open_image(fp, label: str, max_pixels: int) -> Image.Image:
    """``Image.open`` (header only) with each failure turned into an ImageDecodeError."""
    try:
        return Image.open(fp, formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageDecodeError(label, "not an image (unknown or unsupported format)") from None
    except Image.DecompressionBombError:
        raise ImageDecodeError(label, f"image too large (over {max_pixels:,} pixels)") from None
    except Exception as exc:
        raise ImageDecodeError(label, f"cannot open image ({_reason(exc)})") from None


def _to_uint8(array: np.ndarray) -> np.ndarray:
    """Stretch any numeric grey array to 0..255 over its own range (X-rays rarely use 16 bits)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        array = np.nan_to_num(array, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = array.min(), array.max()
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.uint8)
    if array.dtype in (np.uint8, np.uint16, np.int8, np.int16):
        # a lookup table: no float copy of a large 16-bit image
        start = 0 if array.dtype.kind == "u" else int(lo)
        values = np.arange(start, int(hi) + 1, dtype=np.float64)
        lut = np.clip((values - float(lo)) * (255.0 / (float(hi) - float(lo))) + 0.5, 0, 255)
        if start == 0:
            return lut.astype(np.uint8)[array]
        return lut.astype(np.uint8)[array.astype(np.int32) - start]
    lo, hi = float(lo), float(hi)
    out = np.asarray(array, dtype=np.float32) - np.float32(lo)
    out *= np.float32(255.0 / (hi - lo))
    out += np.float32(0.5)
    return np.clip(out, 0, 255, out=out).astype(np.uint8)


def _reason(exc: BaseException) -> str:
    """A one-line reason from a library exception (type name when the message is empty)."""
    text = " ".join(str(exc).split())
    if len(text) > 200:
        text = text[:197] + "..."
    return text or type(exc).__name__


def to_grey(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit grey; colour X-rays are grey pictures saved as RGB."""
    if img.mode == "L":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return Image.fromarray(_to_uint8(np.asarray(img)), mode="L")
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, img)
    return img.convert("L")


def _exif_upright(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation tag (phone photos of films are often stored sideways)."""
    from PIL import ImageOps

    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - broken EXIF must not stop the image itself
        return img
    if orientation in (2, 3, 4, 5, 6, 7, 8):
        return ImageOps.exif_transpose(img)
    return img


_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2}


def load_grey(
    source: Source,
    *,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
) -> Image.Image:
    """Decode ``source`` (path or bytes) to an 8-bit grey PIL image, upright (EXIF orientation).

    ``draft_size`` lets the JPEG decoder scale down by powers of two while decoding (much faster
    for full-size originals); the result is never smaller than ``draft_size``. Files are told
    apart by content, not name. Raises ImageDecodeError naming the file and the reason.
    """
    return load_grey_and_planes(
        source, name=name, draft_size=draft_size, max_pixels=max_pixels, max_bytes=max_bytes
    )[0]


def load_grey_and_planes(
    source: Source,
    *,
    name: str | None = None,
    draft_size: tuple[int, int] | None = None,
    max_pixels: int = MAX_PIXELS,
    max_bytes: int = MAX_FILE_BYTES,
    colour: bool = False,
) -> tuple[Image.Image, Image.Image | None]:
    """``load_grey``, and with ``colour`` the file's own colour planes (a YCbCr picture, upright,
    at the grey's scale) when one decode gives both: a colour JPEG decoded as YCbCr, whose Y
    plane is bit for bit the grey decode (checked on 1744 data-set films), so the colour check
    needs no second decode (a quarter of a film's preparation). None otherwise: a grey file, or
    one whose colour needs its own decode."""
    label = _name(source, name)
    data = read_bytes(source, label, max_bytes)
    if is_dicom(data):
        from pneumo.data.dicom import decode_dicom

        return decode_dicom(data, label, max_pixels), None
    img = open_image(io.BytesIO(data), label, max_pixels)
    check_size(*img.size, label, max_pixels)
    if img.format in ("JPEG", "MPO"):
        # entropy-coded data escapes 0xFF, so this counts markers (an EXIF thumbnail's too)
        scans = data.count(b"\xff\xda")
        if scans > MAX_JPEG_SCANS:
            raise ImageDecodeError(
                label, f"JPEG with {scans} scans (limit {MAX_JPEG_SCANS}): a decoding bomb?"
            )
        if colour and img.mode == "RGB":
            img.draft("YCbCr", draft_size)
            try:
                upright = _decoded(img, label)
            except ImageDecodeError as exc:
                if "file is truncated" in str(exc):  # a second decode would read no more
                    raise
                upright = None  # an RGB-coded file libjpeg cannot give as YCbCr
            if upright is not None and upright.mode == "YCbCr":
                return upright.getchannel("Y"), upright
            img = open_image(io.BytesIO(data), label, max_pixels)  # decode it as grey instead
        if draft_size is not None:
            img.draft("L", draft_size)
    return _decoded(img, label, to_grey), None


def _decoded(img: Image.Image, label: str, then=None) -> Image.Image:
    """``img``'s pixels (within the decode budget), upright, passed through ``then``."""
    width, height = img.size
    cost = _decoded_bytes(width, height, _BYTES_PER_PIXEL.get(img.mode, 4))
    with decode_budget.hold(cost):
        try:
            img.load()  # truncated files fail here (Pillow's default), never padded with grey
            upright = _exif_upright(img)
            return upright if then is None else then(upright)
        except Exception as exc:
            raise ImageDecodeError(label, f"corrupt or truncated image ({_reason(exc)})") from None


BOMB_PIXELS = 2**62
"""What ``header_pixels`` answers for a header past Pillow's bomb limit or a deflate bomb."""


def header_pixels(data: bytes) -> int:
    """How many pixels ``data`` will decode to, from its header alone (all frames of a DICOM);
    0 when the header cannot be read (decoding then says why). Lets a server refuse memory
    bombs, small files that decode to huge images, before decoding anything."""
    try:
        if is_dicom(data):
            from pneumo.data.dicom import check_deflated, read_header

            check_deflated(data, "<header>", MAX_FILE_BYTES)  # a bomb: BOMB_PIXELS
            try:
                ds = read_header(data, "<header>")
            except ImageDecodeError:
                return 0
            frames = int(ds.get("NumberOfFrames") or 1)
            return int(ds.get("Rows") or 0) * int(ds.get("Columns") or 0) * max(1, frames)
        with Image.open(io.BytesIO(data), formats=FORMATS) as img:
            width, height = img.size
            return width * height
    except (Image.DecompressionBombError, ImageDecodeError):
        return BOMB_PIXELS
    except Exception:  # noqa: BLE001 - unreadable headers are reported by the decoder
        return 0


def load_image(source: Source, **kwargs) -> Image.Image:
    """Decode ``source`` to a 3-channel RGB image with R = G = B (what the backbones expect)."""
    return load_grey(source, **kwargs).convert("RGB")


@dataclass(frozen=True)
class ImageInfo:
    """What the header of an image file says, read without decoding the pixels."""

    format: str
    """File format as Pillow names it (JPEG, PNG) or DICOM."""
    width: int
    """Width in pixels."""
    height: int
    """Height in pixels."""
    mode: str
    """Pillow mode of the stored pixels (L, RGB, I;16, P, ...)."""


_TAIL = 64
"""Bytes read from the end of a file to check that it is complete."""


def _check_complete(fmt: str, tail: bytes, label: str) -> None:
    """A truncated JPEG lacks its end-of-image marker and a truncated PNG its IEND chunk; checking
    the last bytes finds cut-off downloads without decoding the pixels."""
    if fmt == "JPEG" and not tail.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        raise ImageDecodeError(label, "truncated JPEG (no end-of-image marker)")
    if fmt == "PNG" and b"IEND" not in tail:
        raise ImageDecodeError(label, "truncated PNG (no IEND chunk)")


def probe_image(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> ImageInfo:
    """Check an image file cheaply: header (format, size, mode) and file end, no pixel decoding.

    Finds missing, empty, non-image, truncated, too small and too large files (the same limits as
    ``load_grey``) in well under a millisecond per file; corruption in the middle of the pixel
    data is only found by decoding. Raises ImageDecodeError naming the file and the reason.
    """
    label = str(path)
    path = Path(path)
    fd, size = _open_regular(path, label, MAX_FILE_BYTES)
    try:
        with os.fdopen(fd, "rb") as f:
            if size == 0:
                raise ImageDecodeError(label, "empty file (0 bytes)")
            head = f.read(132)
            f.seek(max(0, size - _TAIL))
            tail = f.read()
    except OSError as exc:
        raise ImageDecodeError(label, f"cannot read file ({exc.strerror or exc})") from None
    if is_dicom(head):
        from pneumo.data.dicom import probe_dicom

        return probe_dicom(path, label)
    with open_image(path, label, max_pixels) as img:
        fmt, (width, height), mode = img.format or "?", img.size, img.mode
    check_size(width, height, label, max_pixels)
    _check_complete(fmt, tail, label)
    return ImageInfo(fmt, width, height, mode)
