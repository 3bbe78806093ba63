"""Classify uploaded chest X-rays (JPEG, PNG or DICOM)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pneumo.api.deps import get_predictor, get_settings, require_api_key
from pneumo.api.schemas import ErrorResponse, PredictionOut, PredictResponse
from pneumo.api.settings import ApiSettings
from pneumo.inference.base import Predictor

router = APIRouter(prefix="/v1", tags=["predict"])


@router.post(
    "/predict",
    response_model=PredictResponse,
    dependencies=[Depends(require_api_key)],
    responses={
        401: {"model": ErrorResponse, "description": "Missing or wrong API key."},
        413: {"model": ErrorResponse, "description": "Request body over the size cap."},
        422: {"model": PredictResponse, "description": "No file could be read: see each error."},
    },
)
async def predict(
    files: Annotated[list[UploadFile], File(description="One or more JPEG, PNG or DICOM files.")],
    predictor: Annotated[Predictor, Depends(get_predictor)],
    settings: Annotated[ApiSettings, Depends(get_settings)],
):
    """Classify each uploaded file. A file that cannot be read gets its reason in ``error``
    and the others are still classified; 422 only when none could be read."""
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
    preds = await run_in_threadpool(predictor.predict_sources, datas, names)
    body = PredictResponse(
        model=predictor.metadata.backbone,
        results=[
            PredictionOut(
                filename=p.source, **{k: v for k, v in p.to_dict().items() if k != "source"}
            )
            for p in preds
        ],
    )
    if all(p.error is not None for p in preds):
        return JSONResponse(body.model_dump(), status_code=422)
    return body
