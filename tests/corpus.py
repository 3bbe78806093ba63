"""A generated corpus of bad, odd and hostile input files, for the CLI, the API and the app.

Each ``Case`` writes one file (or special file) and says what a user must get for it:
``ok`` (classified), ``ood`` (classified and flagged as not a chest X-ray), ``error`` (a row
with a one-line reason) or ``any`` (a row either way: classified or refused, never a crash).
Everything is generated: no image from the shared data is copied.
"""

from __future__ import annotations

import gzip
import io
import os
import socket
import struct
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from synthetic import make_xray


@dataclass(frozen=True)
class Case:
    kind: str
    """Short unique name of the case (the pytest id)."""
    filename: str
    """Name of the file written (a str; may hold undecodable bytes as surrogates)."""
    expect: str
    """ok, ood, error or any."""
    write: Callable[[Path], None]
    """Writes the case at the given path."""
    special: bool = False
    """Not a regular file (FIFO, device link, socket, ...): not sent over HTTP."""


def xray(size: int = 96, seed: int = 7) -> Image.Image:
    return make_xray(seed, 1, size)


def encode(img: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _bytes(data: bytes | Callable[[], bytes]) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        path.write_bytes(data() if callable(data) else data)

    return write


def _jpeg(**kwargs) -> bytes:
    return encode(xray(), "JPEG", **kwargs)


def _png(img: Image.Image | None = None, **kwargs) -> bytes:
    return encode(img if img is not None else xray(), "PNG", **kwargs)


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A small PNG whose header claims a huge size (decompression bomb)."""
    raw = _png(xray(32))
    chunk = b"IHDR" + struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    patched = struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk) & 0xFFFFFFFF)
    return raw[:8] + patched + raw[8 + 25 :]


def png_16bit_big(side: int) -> bytes:
    """A 16-bit PNG of ``side`` x ``side`` that compresses to almost nothing (memory bomb)."""
    img = Image.new("I;16", (side, side), 1000)
    return encode(img, "PNG", compress_level=9)


def _jpeg_bomb() -> bytes:
    data = bytearray(_jpeg())
    i = data.index(b"\xff\xc0")  # SOF0: length(2) precision(1) height(2) width(2)
    data[i + 5 : i + 9] = struct.pack(">HH", 65000, 65000)
    return bytes(data)


def jpeg_scan_bomb(side: int = 4000, extra_scans: int = 2000) -> bytes:
    """A small progressive JPEG with thousands of repeated scans: each is a pass over every
    pixel, so decoding takes minutes (the file stays under 200 KiB)."""
    data = encode(Image.new("L", (side, side), 128), "JPEG", progressive=True)
    starts = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xda"]
    ends = [*starts[1:], len(data) - 2]
    smallest = min(range(1, len(starts)), key=lambda k: ends[k] - starts[k])
    scan = data[starts[smallest] : ends[smallest]]
    return data[:-2] + scan * extra_scans + b"\xff\xd9"


def _exif_rotated() -> bytes:
    img = Image.new("L", (160, 96), 40)
    img.paste(220, (0, 0, 40, 96))  # bright band on the left, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    return encode(img, "JPEG", exif=exif.tobytes())


def _corrupt_exif() -> bytes:
    return encode(xray(), "JPEG", exif=b"Exif\x00\x00II*\x00\xff\xff\xff\xff garbage")


def _colour_noise() -> bytes:
    rng = np.random.default_rng(0)
    return encode(Image.fromarray(rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)), "JPEG")


def _colour_photo() -> bytes:
    yy, xx = np.mgrid[0:128, 0:128]
    rgb = np.stack([xx * 2, yy * 2, 255 - xx], axis=-1).astype(np.uint8)
    return encode(Image.fromarray(rgb), "PNG")


def _flip_middle(data: bytes) -> bytes:
    b = bytearray(data)
    mid = len(b) // 2
    b[mid : mid + 64] = bytes(64)
    return bytes(b)


def _bad_crc_png() -> bytes:
    data = bytearray(_png())
    data[29] ^= 0xFF  # inside the IHDR CRC
    return bytes(data)


def _apng() -> bytes:
    frames = [xray(96, seed) for seed in range(3)]
    return encode(frames[0], "PNG", save_all=True, append_images=frames[1:])


def _tiff_pages() -> bytes:
    frames = [xray(96, seed) for seed in range(2)]
    return encode(frames[0], "TIFF", save_all=True, append_images=frames[1:])


def _eps() -> bytes:
    return b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"


def _zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("a.jpeg", _jpeg())
    return buf.getvalue()


# --- DICOM --------------------------------------------------------------------------------------


def cr_dataset():
    """An empty computed-radiography data set with its file meta (explicit VR little endian)."""
    import pydicom
    import pydicom.uid as uid
    from pydicom.dataset import FileMetaDataset

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    return ds


def dicom(
    *,
    photometric: str = "MONOCHROME2",
    syntax: str = "ExplicitVRLittleEndian",
    bits: int = 16,
    frames: int = 1,
    size: int = 96,
    pixels: bool = True,
    drop: tuple[str, ...] = (),
    rows: int | None = None,
    truncate_pixels: bool = False,
    extra: Callable | None = None,
    jpeg_frame: bytes | None = None,
) -> bytes:
    """A DICOM Part 10 file of a generated X-ray, in any photometric interpretation and
    transfer syntax pydicom (with Pillow) can write."""
    import pydicom.uid as uid

    grey = np.asarray(xray(size), dtype=np.uint16)
    ds = cr_dataset()
    meta = ds.file_meta
    ds.PatientName = "Doe^Jane"
    ds.Rows, ds.Columns = grey.shape
    ds.PhotometricInterpretation = photometric
    ds.PixelRepresentation = 0
    if photometric in ("RGB", "YBR_FULL"):
        rgb = np.repeat(grey[..., None].astype(np.uint8), 3, axis=-1)
        if photometric == "YBR_FULL":
            from pydicom.pixels import convert_color_space

            rgb = convert_color_space(rgb, "RGB", "YBR_FULL")
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        array = rgb
    elif photometric == "PALETTE COLOR":
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ramp = (np.arange(256, dtype=np.uint16) * 257).tobytes()
        for colour in ("Red", "Green", "Blue"):
            setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
            setattr(ds, f"{colour}PaletteColorLookupTableData", ramp)
        array = grey.astype(np.uint8)
    else:
        ds.SamplesPerPixel = 1
        if bits == 8:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
            array = grey.astype(np.uint8)
        else:
            ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
            array = grey * 16
    if frames > 1:
        ds.NumberOfFrames = frames
        array = np.stack([array] * frames)
    if extra is not None:
        extra(ds)
    if pixels:
        ds.PixelData = np.ascontiguousarray(array).tobytes()
        if truncate_pixels:
            ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    if rows is not None:
        ds.Rows = rows
    for key in drop:
        delattr(ds, key)
    if syntax in ("RLELossless",):
        ds.compress(uid.RLELossless, encoding_plugin="pydicom")
    elif syntax == "JPEGBaseline8Bit":
        from pydicom.encaps import encapsulate

        img = Image.fromarray(grey.astype(np.uint8))
        ds.PixelData = encapsulate([jpeg_frame or encode(img, "JPEG", quality=95)])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = uid.JPEGBaseline8Bit
    elif syntax == "JPEG2000Lossless":
        from pydicom.encaps import encapsulate

        img = Image.fromarray(grey.astype(np.uint8))
        ds.PixelData = encapsulate([encode(img, "JPEG2000", irreversible=False)])
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds["PixelData"].VR = "OB"
        meta.TransferSyntaxUID = uid.JPEG2000Lossless
    elif syntax != "ExplicitVRLittleEndian":
        meta.TransferSyntaxUID = getattr(uid, syntax)
    buf = io.BytesIO()
    if syntax == "ExplicitVRBigEndian":
        ds.save_as(buf, implicit_vr=False, little_endian=False, enforce_file_format=True)
    else:
        ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def deflate_bomb(inflated_mib: int = 300) -> bytes:
    """A deflated DICOM whose data set inflates to ``inflated_mib`` MiB of zeros."""
    import zlib

    good = dicom(syntax="DeflatedExplicitVRLittleEndian")
    assert good[132:138] == b"\x02\x00\x00\x00UL"  # (0002,0000) file meta group length
    meta_end = 144 + struct.unpack_from("<I", good, 140)[0]
    packer = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    zeros = bytes(1 << 20)
    body = b"".join(packer.compress(zeros) for _ in range(inflated_mib)) + packer.flush()
    return good[:meta_end] + body


def _window(ds) -> None:
    ds.WindowCenter, ds.WindowWidth = 2400, 2400  # a window inside the data range


def _rescale(ds) -> None:
    ds.RescaleSlope, ds.RescaleIntercept = 2, -1024


# --- special files ------------------------------------------------------------------------------


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _link(target: str) -> Callable[[Path], None]:
    return lambda path: path.symlink_to(target)


def _socket(path: Path) -> None:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(str(path))
    s.close()  # the socket file stays


def _directory(path: Path) -> None:
    path.mkdir()


def _dicom(**kwargs) -> Callable[[Path], None]:
    return _bytes(lambda: dicom(**kwargs))


CASES: list[Case] = [
    # formats and modes that must be classified
    Case("jpeg-grey", "grey.jpeg", "ok", _bytes(lambda: _jpeg())),
    Case("jpeg-rgb-grey", "rgb.jpg", "ok", _bytes(lambda: encode(xray().convert("RGB"), "JPEG"))),
    Case("jpeg-progressive", "prog.jpeg", "ok", _bytes(lambda: _jpeg(progressive=True))),
    Case("jpeg-cmyk", "cmyk.jpeg", "any", _bytes(lambda: encode(xray().convert("CMYK"), "JPEG"))),
    Case("jpeg-upper-suffix", "UPPER.JPEG", "ok", _bytes(lambda: _jpeg())),
    Case("jpeg-exif-rotated", "rotated.jpeg", "ok", _bytes(_exif_rotated)),
    Case("jpeg-corrupt-exif", "badexif.jpeg", "ok", _bytes(_corrupt_exif)),
    Case("jpeg-named-png", "really-jpeg.png", "ok", _bytes(lambda: _jpeg())),
    Case("png-grey", "grey.png", "ok", _bytes(lambda: _png())),
    Case("png-16bit", "deep.png", "ok", _bytes(lambda: _png(xray().convert("I;16")))),
    Case("png-rgba", "rgba.png", "ok", _bytes(lambda: _png(xray().convert("RGBA")))),
    Case("png-la", "la.png", "ok", _bytes(lambda: _png(xray().convert("LA")))),
    Case("png-palette", "pal.png", "ok", _bytes(lambda: _png(xray().convert("P")))),
    Case("png-1bit", "bits.png", "any", _bytes(lambda: _png(xray().convert("1")))),
    Case("png-interlaced", "interlace.png", "ok", _bytes(lambda: _png(interlace=True))),
    Case("png-animated", "anim.png", "ok", _bytes(_apng)),
    Case("png-named-jpeg", "really-png.jpeg", "ok", _bytes(lambda: _png())),
    Case("tiff", "film.tiff", "any", _bytes(lambda: encode(xray(), "TIFF"))),
    Case("tiff-pages", "pages.tif", "any", _bytes(_tiff_pages)),
    Case("tiff-float", "float.tif", "any", _bytes(lambda: encode(xray().convert("F"), "TIFF"))),
    Case("bmp", "film.bmp", "any", _bytes(lambda: encode(xray(), "BMP"))),
    Case("webp", "film.webp", "any", _bytes(lambda: encode(xray(), "WEBP"))),
    Case("black", "black.png", "ood", _bytes(lambda: _png(Image.new("L", (96, 96), 0)))),
    Case(
        "white", "white.jpeg", "ood", _bytes(lambda: encode(Image.new("L", (96, 96), 255), "JPEG"))
    ),
    Case(
        "washed-out",
        "faint.png",
        "ood",
        _bytes(lambda: _png(xray().point(lambda v: 120 + v // 64))),
    ),
    Case("undecodable-name", "bad_utf8_\udcff\udcfe.jpeg", "ok", _bytes(lambda: _jpeg())),
    Case("odd-name", 'new\nline, "quoted";=1+1.jpeg', "ok", _bytes(lambda: _jpeg())),
    Case("dash-name", "-o.jpeg", "ok", _bytes(lambda: _jpeg())),
    Case("unicode-name", "Röntgen 肺 🫁.jpeg", "ok", _bytes(lambda: _jpeg())),
    Case("long-name", "x" * 240 + ".jpeg", "ok", _bytes(lambda: _jpeg())),
    # DICOM: photometric interpretations, bit depths, transfer syntaxes, names
    Case("dicom-mono2", "mono2.dcm", "ok", _dicom()),
    Case("dicom-mono1", "mono1.dcm", "ok", _dicom(photometric="MONOCHROME1")),
    Case("dicom-8bit", "eight.dcm", "ok", _dicom(bits=8)),
    Case("dicom-rgb", "rgb.dcm", "ok", _dicom(photometric="RGB")),
    Case("dicom-ybr", "ybr.dcm", "ok", _dicom(photometric="YBR_FULL")),
    Case("dicom-palette", "palette.dcm", "ok", _dicom(photometric="PALETTE COLOR")),
    Case("dicom-multiframe", "frames.dcm", "ok", _dicom(frames=3)),
    Case("dicom-window", "window.dcm", "ok", _dicom(extra=_window)),
    Case("dicom-rescale", "rescale.dcm", "ok", _dicom(extra=_rescale)),
    Case("dicom-implicit", "implicit.dcm", "ok", _dicom(syntax="ImplicitVRLittleEndian")),
    Case("dicom-big-endian", "big.dcm", "ok", _dicom(syntax="ExplicitVRBigEndian")),
    Case("dicom-deflated", "deflate.dcm", "ok", _dicom(syntax="DeflatedExplicitVRLittleEndian")),
    Case("dicom-rle", "rle.dcm", "ok", _dicom(syntax="RLELossless")),
    Case("dicom-jpeg", "jpeg.dcm", "ok", _dicom(syntax="JPEGBaseline8Bit")),
    Case("dicom-j2k", "j2k.dcm", "any", _dicom(syntax="JPEG2000Lossless")),
    Case("dicom-no-suffix", "IM000001", "ok", _dicom()),
    Case("dicom-other-suffix", "scan.img", "ok", _dicom()),
    # refused, each with a reason
    Case("empty", "empty.jpeg", "error", _bytes(b"")),
    Case("text", "notes.jpeg", "error", _bytes(b"this is not an image\n")),
    Case("html", "page.png", "error", _bytes(b"<html><body>hi</body></html>")),
    Case("random-bytes", "noise.png", "error", _bytes(os.urandom(4096))),
    Case("jpeg-truncated", "cut.jpeg", "error", _bytes(lambda: _jpeg()[:300])),
    Case("jpeg-header-only", "head.jpeg", "error", _bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")),
    Case("png-truncated", "cut.png", "error", _bytes(lambda: _png()[:120])),
    Case("png-bad-crc", "crc.png", "any", _bytes(_bad_crc_png)),
    Case("jpeg-middle-zeroed", "holes.jpeg", "any", _bytes(lambda: _flip_middle(_jpeg()))),
    Case("png-bomb", "bomb.png", "error", _bytes(lambda: png_bomb())),
    Case("jpeg-bomb", "bomb.jpeg", "error", _bytes(_jpeg_bomb)),
    Case("jpeg-scan-bomb", "scans.jpeg", "error", _bytes(lambda: jpeg_scan_bomb())),
    Case("tiny", "tiny.png", "error", _bytes(lambda: _png(Image.new("L", (1, 1))))),
    Case("gif", "film.gif", "error", _bytes(lambda: encode(xray(), "GIF"))),
    Case("eps", "ghost.jpeg", "error", _bytes(_eps)),
    Case("svg", "vector.png", "error", _bytes(b'<svg xmlns="http://www.w3.org/2000/svg"/>')),
    Case("pdf", "report.dcm", "error", _bytes(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n")),
    Case("gzip", "packed.jpeg", "error", _bytes(lambda: gzip.compress(_jpeg()))),
    Case("zip", "archive.jpeg", "error", _bytes(_zip)),
    Case("j2k", "film.jp2", "error", _bytes(lambda: encode(xray(), "JPEG2000"))),
    Case("dicom-header-only", "header.dcm", "error", _dicom(pixels=False)),
    Case("dicom-no-rows", "norows.dcm", "error", _dicom(drop=("Rows",))),
    Case("dicom-short-pixels", "short.dcm", "error", _dicom(truncate_pixels=True)),
    Case("dicom-huge-header", "huge.dcm", "error", _dicom(rows=65535)),
    Case("dicom-deflate-bomb", "bomb.dcm", "error", _bytes(lambda: deflate_bomb())),
    Case(
        "dicom-jpeg-scan-bomb",
        "scans.dcm",
        "error",
        _bytes(lambda: dicom(syntax="JPEGBaseline8Bit", jpeg_frame=jpeg_scan_bomb(2000, 1000))),
    ),
    Case("dicom-garbage", "garbage.dcm", "error", _bytes(b"\0" * 128 + b"DICM" + os.urandom(200))),
    # special files: refused without reading or blocking
    Case("fifo", "pipe.jpeg", "error", _fifo, special=True),
    Case("dev-zero", "zero.jpeg", "error", _link("/dev/zero"), special=True),
    Case("dev-null", "null.png", "error", _link("/dev/null"), special=True),
    Case("dangling-link", "gone.jpeg", "error", _link("/nonexistent/x.jpeg"), special=True),
    Case("socket", "sock.png", "error", _socket, special=True),
    Case("directory", "folder.jpeg", "error", _directory, special=True),
    # not chest X-rays: classified, but flagged
    Case("colour-noise", "noise.jpeg", "ood", _bytes(_colour_noise)),
    Case("colour-photo", "photo.png", "ood", _bytes(_colour_photo)),
    Case("sliver", "sliver.png", "ood", _bytes(lambda: _png(Image.new("L", (16, 4000), 128)))),
]


def write_case(case: Case, folder: Path) -> Path:
    """Write ``case`` into ``folder``; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / case.filename
    case.write(path)
    return path
