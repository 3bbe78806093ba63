"""Classify uploaded chest X-rays (JPEG, PNG or DICOM)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pneumo.api.deps import get_predictor, get_settings, require_api_key
from pneumo.api.schemas import ErrorResponse, PredictionOut, PredictResponse
from pneumo.api.settings import ApiSettings
from pneumo.data.decode import BOMB_PIXELS, header_pixels
from pneumo.inference.batching import BatchingPredictor
from pneumo.inference.predictor import Prediction

router = APIRouter(prefix="/v1", tags=["predict"])

HEATMAP_SIDE = 512
"""Longest side of an overlay in an API answer (a few hundred KiB of base64 each)."""


@router.post(
    "/predict",
    response_model=PredictResponse,
    dependencies=[Depends(require_api_key)],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
        413: {"model": ErrorResponse, "description": "Request body over the size cap."},
        503: {
            "model": ErrorResponse,
            "description": "Too many images in flight (PNEUMO_QUEUE_IMAGES): retry after the "
            "seconds in the Retry-After header.",
        },
        422: {"model": PredictResponse, "description": "No file could be read: see each error."},
    },
)
async def predict(
    request: Request,
    files: Annotated[list[UploadFile], File(description="One or more JPEG, PNG or DICOM files.")],
    predictor: Annotated[BatchingPredictor, Depends(get_predictor)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
    heatmap: Annotated[
        bool,
        Query(
            description="Add `heatmap_png` to each diagnosed result: the regions that argued "
            f"for its label over the film, PNG (at most {HEATMAP_SIDE} pixels a side), base64."
        ),
    ] = False,
):
    """Classify each uploaded file. A file that cannot be read gets its reason in ``error``
    and the others are still classified; 422 only when none could be read. With
    ``?heatmap=true`` each result also carries ``heatmap_png`` (null when not diagnosed)."""
    if len(files) > settings.max_files:
        raise HTTPException(
            422,
            f"too many files: {len(files)} (at most {settings.max_files} per request)",
        )
    datas, names = [], []
    for i, upload in enumerate(files):
        datas.append(await upload.read())
        names.append(upload.filename or f"file{i}")
    # decoding and the forward pass block: keep them off the event loop
    preds = await run_in_threadpool(_predict_within_limits, predictor, datas, names, settings)
    request.app.state.metrics.count_predictions(
        preds, backend=predictor.backend, precision=predictor.precision
    )
    body = PredictResponse(
        model=predictor.metadata.backbone,
        results=[PredictionOut.of(p) for p in preds],
    )
    status = 422 if all(p.error is not None for p in preds) else 200
    if heatmap:
        pngs = await run_in_threadpool(_heatmaps, predictor, datas, preds)
        content = body.model_dump()
        for result, png in zip(content["results"], pngs, strict=True):
            result["heatmap_png"] = png
        return JSONResponse(content, status_code=status)
    if status == 422:
        return JSONResponse(body.model_dump(), status_code=422)
    return body


def _heatmaps(
    predictor: BatchingPredictor, datas: list[bytes], preds: list[Prediction]
) -> list[str | None]:
    """Base64 PNG overlays for the diagnosed films (None for the others), from the network's
    class activation map: no torch."""
    import base64

    from pneumo.data.decode import load_grey
    from pneumo.inference.cam import overlay_png

    todo = [i for i, p in enumerate(preds) if p.label is not None]
    out: list[str | None] = [None] * len(preds)
    if not todo:
        return out
    names = predictor.metadata.class_names
    images = [load_grey(datas[i], draft_size=(HEATMAP_SIDE, HEATMAP_SIDE)) for i in todo]
    maps = predictor.heatmaps(images, [names.index(preds[i].label) for i in todo])
    for i, img, cam in zip(todo, images, maps, strict=True):
        out[i] = base64.b64encode(overlay_png(img, cam, max_side=HEATMAP_SIDE)).decode("ascii")
    return out


def _predict_within_limits(
    predictor: BatchingPredictor, datas: list[bytes], names: list[str], settings: ApiSettings
) -> list[Prediction]:
    """Decode and classify only the files whose headers fit the per-image and per-request pixel
    limits; the others get an error of their own, in upload order, without being decoded."""
    out: list[Prediction | None] = [None] * len(datas)
    todo: list[int] = []
    total = 0
    for i, data in enumerate(datas):
        pixels = header_pixels(data)  # 0: unreadable header, the decoder says why
        if pixels > settings.max_pixels:
            size = "a decompression bomb" if pixels >= BOMB_PIXELS else f"{_mpx(pixels)} pixels"
            out[i] = Prediction(
                source=names[i],
                error=f"{names[i]}: image too large ({size} when decoded; the limit is "
                f"{_mpx(settings.max_pixels)} pixels per image)",
            )
        elif total + pixels > settings.max_request_pixels:
            out[i] = Prediction(
                source=names[i],
                error=f"{names[i]}: not decoded, the request is over its limit of "
                f"{_mpx(settings.max_request_pixels)} pixels; send this file in another request",
            )
        else:
            total += pixels
            todo.append(i)
    with predictor.admit(len(todo)):  # 503 now rather than a queue that only grows
        preds = predictor.predict_sources([datas[i] for i in todo], [names[i] for i in todo])
    for i, pred in zip(todo, preds, strict=True):
        out[i] = pred
    return out  # type: ignore[return-value]


def _mpx(pixels: int) -> str:
    return f"{pixels / 1e6:,.1f} M"
