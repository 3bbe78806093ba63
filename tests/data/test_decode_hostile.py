"""Decoding odd and hostile files (issue 10): orientation, DICOM variants by content, plain
messages, special files, size caps and bounded memory."""

from __future__ import annotations

import io
import os
import threading
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from corpus import CASES, dicom, encode, png_16bit_big, write_case, xray
from pneumo.data.decode import decode_budget, load_grey, probe_image, read_bytes
from pneumo.errors import ImageDecodeError

DICOM_CASES = [c for c in CASES if c.kind.startswith("dicom-") and c.expect == "ok"]


def test_exif_orientation_is_applied():
    """A phone photo of a film stored sideways (orientation 6) is decoded upright."""
    stored = Image.new("L", (160, 96), 40)
    stored.paste(220, (0, 0, 40, 96))  # bright band on the stored left edge
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif.tobytes())
    img = load_grey(buf.getvalue())
    assert img.size == (96, 160)  # portrait, as displayed
    pixels = np.asarray(img, dtype=np.float32)
    assert pixels[:30].mean() > 180 > 60 > pixels[-60:].mean()  # the band is now at the top


def test_header_only_dicom_says_so_plainly():
    with pytest.raises(ImageDecodeError) as info:
        load_grey(dicom(pixels=False), name="report.dcm")
    message = str(info.value)
    assert message == "report.dcm: DICOM file without an image (no pixel data)"
    with pytest.raises(ImageDecodeError, match="lacks Rows"):
        load_grey(dicom(drop=("Rows",)), name="x.dcm")


@pytest.mark.parametrize("case", DICOM_CASES, ids=lambda c: c.kind)
def test_every_dicom_variant_decodes_to_the_same_picture(case, tmp_path):
    """Photometric interpretations and transfer syntaxes pydicom can write, found by content
    whatever the name; MONOCHROME1 is inverted back, so all look alike."""
    reference = np.asarray(xray(), dtype=np.float32)
    img = load_grey(write_case(case, tmp_path))
    assert img.mode == "L" and img.size == (96, 96)
    got = np.asarray(img, dtype=np.float32)
    corr = np.corrcoef(got.ravel(), reference.ravel())[0, 1]
    if case.kind == "dicom-mono1":  # the same values mean the inverse picture
        corr = -corr
    assert corr > 0.9, f"{case.kind}: correlation {corr:.2f}"


@pytest.mark.parametrize(
    "kind", ["fifo", "dev-zero", "dev-null", "socket", "directory", "dangling-link"]
)
def test_special_files_are_refused_by_read_and_probe(kind, tmp_path):
    (case,) = [c for c in CASES if c.kind == kind]
    path = write_case(case, tmp_path)
    for call in (lambda: read_bytes(path, str(path)), lambda: probe_image(path)):
        with pytest.raises(ImageDecodeError) as info:
            call()
        assert str(info.value).startswith(str(path))


def test_symlink_to_a_regular_image_still_works(tmp_path):
    real = tmp_path / "real.png"
    xray().save(real)
    link = tmp_path / "link.jpeg"
    link.symlink_to(real)
    assert load_grey(link).size == (96, 96)


def test_files_over_the_cap_are_not_read(tmp_path):
    big = tmp_path / "big.png"
    with open(big, "wb") as f:
        f.truncate(64 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="file too large"):
            load_grey(big, max_bytes=8 * 1024 * 1024)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024


def test_16_bit_images_decode_without_a_float_copy():
    """A 16-bit 3000x3000 PNG: numpy holds the stored pixels and the 8-bit result (4.5 bytes
    a pixel at most), not float32 working copies (the old path peaked at about 14)."""
    data = png_16bit_big(3000)
    tracemalloc.start()
    try:
        img = load_grey(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert img.size == (3000, 3000)
    assert peak < 3000 * 3000 * 4.5, f"peak {peak / 1e6:.0f} MB"


def test_decode_budget_makes_large_decodes_wait_their_turn():
    """Concurrent decodes never hold more than the process-wide budget."""
    old = decode_budget.limit
    decode_budget.limit = 3000 * 3000 * 4 + 1  # room for one such image at a time
    seen = []
    real_hold = decode_budget.hold

    def spy(nbytes):
        seen.append(decode_budget.used)
        return real_hold(nbytes)

    decode_budget.hold = spy
    try:
        data = png_16bit_big(3000)
        threads = [threading.Thread(target=load_grey, args=(data,)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        decode_budget.hold = real_hold
        decode_budget.limit = old
    assert len(seen) == 4 and decode_budget.used == 0


def test_unsupported_formats_are_refused_by_content():
    """EPS would run Ghostscript inside Pillow: refused whatever the name."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 100 100\nshowpage\n"
    with pytest.raises(ImageDecodeError, match="not an image"):
        load_grey(eps, name="x.jpeg")


def test_bytes_like_sources_are_accepted():
    buf = io.BytesIO()
    xray().save(buf, format="PNG")
    assert load_grey(memoryview(buf.getvalue())).size == (96, 96)
    assert load_grey(bytearray(buf.getvalue())).size == (96, 96)


def test_unreadable_file_names_are_reported(tmp_path):
    with pytest.raises(ImageDecodeError, match="invalid file name"):
        read_bytes("bad\0name.jpeg", "bad name")
    assert not os.path.exists(tmp_path / "nothing")


def test_deflated_dicom_bomb_is_refused_with_bounded_memory():
    """pydicom inflates a deflated data set whole: 300 KiB would become 300 MiB."""
    from corpus import deflate_bomb

    bomb = deflate_bomb(300)
    assert len(bomb) < 1024 * 1024
    tracemalloc.start()
    try:
        with pytest.raises(ImageDecodeError, match="zip bomb"):
            load_grey(bomb, name="bomb.dcm")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 * 1024 * 1024
    assert load_grey(dicom(syntax="DeflatedExplicitVRLittleEndian")).size == (96, 96)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["/proc/self/status", "/proc/kmsg"])
def test_files_that_claim_zero_bytes_are_not_read(target, tmp_path):
    """procfs files are 'regular' with size 0; some (kmsg) block forever when read."""
    if not os.path.exists(target):
        pytest.skip(f"{target} not here")
    link = tmp_path / "x.jpeg"
    link.symlink_to(target)
    with pytest.raises(ImageDecodeError, match="empty file|permission denied|cannot read"):
        load_grey(link)


@pytest.mark.timeout(60)
def test_jpeg_with_thousands_of_scans_is_refused_at_once():
    import time

    from corpus import jpeg_scan_bomb

    bomb = jpeg_scan_bomb()
    assert len(bomb) < 200 * 1024
    start = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="scans"):
        load_grey(bomb, name="scans.jpeg", draft_size=(224, 224))
    assert time.perf_counter() - start < 1.0
    progressive = encode(xray(), "JPEG", progressive=True)  # about 10 scans: fine
    assert load_grey(progressive).size == (96, 96)
