"""int8 by post-training static quantisation (NNCF): activation ranges are calibrated on
training films, so int8 runs end to end on the CPU's int8 units. Dynamic quantisation, which
measures ranges per call, was slower than fp32 here and flipped decisions. The first
convolution (raw pixels) and the classifier stay fp32, the usual recipe: on the bundled model's
validation split that cut flipped decisions from 28 to 6 and those outside the uncertain band
from 5 to 0, at the same speed.

Calibration runs in a child process (``python -m pneumo.inference.quantize``): NNCF imports
torch (about 500 MiB) and starts thread pools that the caller, a `pneumo predict` on first use
or a test run, is better without."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

from pneumo.errors import ModelError, PneumoError

if TYPE_CHECKING:
    from pneumo.data.discover import ImageRecord

log = logging.getLogger("pneumo.inference.quantize")  # also when run as __main__

_LAYERS = ("Convolution", "GroupConvolution", "MatMul")


def ensure_int8_ir(model_dir: str | Path, calibration: list[ImageRecord]) -> Path:
    """The cached int8 IR of ``model_dir``, calibrated on first use on the ``calibration``
    films (decoded and preprocessed as at inference) in a child process."""
    from pneumo.inference.openvino_backend import cached_ir_path

    xml = cached_ir_path(model_dir, "int8")
    if xml.is_file() and xml.with_suffix(".bin").is_file():
        return xml
    if not calibration:
        raise ModelError("int8 needs training films to calibrate on; none were found")
    with tempfile.NamedTemporaryFile("w", suffix=".json") as job:
        json.dump({"model_dir": str(model_dir), "paths": [str(r.path) for r in calibration]}, job)
        job.flush()
        done = subprocess.run([sys.executable, "-m", __name__, job.name], check=False)
    if done.returncode != 0 or not xml.is_file():
        raise ModelError(f"{model_dir}: int8 calibration failed (see the messages above)")
    return xml


def calibrate(model_dir: str | Path, paths: list[str]) -> Path:
    """Quantise ``model_dir`` to int8 on the films at ``paths`` and cache the IR (in this
    process: ``ensure_int8_ir`` runs it in a child)."""
    from pneumo.inference.openvino_backend import (
        OpenVinoPredictor,
        cached_ir_path,
        ensure_ir,
        save_ir,
    )
    from pneumo.models.checkpoint import read_metadata

    # NNCF logs every ignored node and graph step at INFO (a screenful on `pneumo models
    # --check`) and its torch import warns that this CPU machine has no CUDA: warnings only.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    try:
        import nncf
        import openvino as ov
    except ImportError:
        raise ModelError("int8 needs NNCF: pip install 'pneumo[openvino]'") from None
    logging.getLogger("nncf").setLevel(logging.WARNING)  # NNCF sets INFO on import: after it
    fp32 = OpenVinoPredictor(ensure_ir(model_dir), read_metadata(model_dir))
    films = (fp32.pipeline.prepare(path, path) for path in paths)
    arrays = [film.array[None] for film in films if film.error is None]
    if not arrays:
        raise ModelError("int8 needs training films to calibrate on; none could be read")
    log.info("calibrating int8 on %d training films (once per machine)", len(arrays))
    model = ov.Core().read_model(str(fp32.model_path))
    layers = [op for op in model.get_ordered_ops() if op.get_type_name() in _LAYERS]
    kept = nncf.IgnoredScope(names=[layers[0].get_friendly_name(), layers[-1].get_friendly_name()])
    quantized = nncf.quantize(
        model, nncf.Dataset(arrays), subset_size=len(arrays), ignored_scope=kept
    )
    xml = cached_ir_path(model_dir, "int8")
    save_ir(quantized, xml)
    return xml


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    job = json.loads(Path(sys.argv[1]).read_text())
    try:
        calibrate(job["model_dir"], job["paths"])
    except PneumoError as exc:
        log.error("%s", exc)
        sys.exit(1)
