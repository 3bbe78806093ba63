"""The size limits every face of pneumo (CLI, app, API, DICOM node) starts from, in one place so
that they cannot disagree; ``pneumo.api.settings`` and ``pneumo.app.settings`` read their
defaults from here and let ``PNEUMO_*`` variables change them. Sizes are in MiB (2**20 bytes),
the one unit pneumo reports sizes in."""

from __future__ import annotations

MiB = 2**20

MAX_UPLOAD_MIB = 20.0
"""Largest file accepted from a client, uploaded (app, API request body) or fetched from a URL
(app). JPEG, PNG and compressed DICOM chest films fit well under it; an uncompressed 16-bit
DICOM from the largest detectors (4300x4300 pixels) is about 35 MiB and needs
PNEUMO_MAX_UPLOAD_MB (--max-upload-mb) raised."""

MAX_PIXELS = 40_000_000
"""Most pixels of one image, read from its header before decoding (decompression bombs).
One default for CLI, app and API: the largest chest detectors (43 x 43 cm at 100 um) give about
4300x4300 = 18.5 Mpixel, so 40 M leaves twice that, and it refuses the 7700x7700 16-bit PNG
(59.3 M pixels in 180 KiB) that took the API to 2.5 GiB with 32 copies; the 60 M the decoder
allowed before had no film to justify it."""

MAX_FILE_BYTES = 256 * MiB
"""Largest file read from disk or a DICOM node before decoding (a 40-Mpixel 16-bit DICOM is
about 76 MiB, a multi-frame one more)."""

DECODE_BUDGET_MIB = 1536.0
"""Decoded memory all concurrent decodes of one process may hold at once; decodes beyond it
wait their turn (bounded memory under many concurrent large images)."""
