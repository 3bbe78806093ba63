"""The streaming pipeline: inputs are read only as far as the network needs, results come out
in input order as they are ready, and rows reach the file as they come."""

from __future__ import annotations

import json

import pytest


def test_inputs_are_pulled_lazily_through_a_bounded_queue(onnx_predictor, xray_files):
    pulled = []

    def sources():
        for i in range(200):
            pulled.append(i)
            yield xray_files[i % 5]

    onnx_predictor.batch_size = 4
    try:
        stream = onnx_predictor.iter_predict_sources(sources())
        first = next(stream)
        # one batch answered: the batch itself and two batches of look-ahead at most were read
        assert len(first) == 4 and len(pulled) <= 3 * 4, len(pulled)
        rest = [p for chunk in stream for p in chunk]
    finally:
        onnx_predictor.batch_size = 8
    assert len(pulled) == 200 and len(first) + len(rest) == 200
    assert all(p.error is None for p in first + rest)
    assert [p.source for p in first + rest] == [str(xray_files[i % 5]) for i in range(200)]


def test_rows_stream_to_the_output_and_it_appears_only_when_complete(
    tiny_model, xray_files, tmp_path, monkeypatch
):
    from pneumo.inference import predict
    from pneumo.inference.rows import RowWriter

    out = tmp_path / "out.json"
    seen = []
    real_write = RowWriter.write

    def spy(self, row):
        # while rows are being written the final file does not exist yet (no half files)
        seen.append((row["path"], out.exists(), self._tmp.stat().st_size))
        real_write(self, row)

    monkeypatch.setattr(RowWriter, "write", spy)
    missing = tmp_path / "gone.jpeg"
    summary = predict.predict_files(
        [*xray_files, missing], model=tiny_model, output=out, batch_size=2, progress=False
    )
    assert summary.total == 7 and summary.errors == 1
    assert not any(exists for _, exists, _ in seen)
    sizes = [size for _, _, size in seen]
    assert sizes == sorted(sizes) and sizes[-1] > sizes[0]  # written as they came
    rows = json.loads(out.read_text())
    assert [r["path"] for r in rows] == [str(p) for p in [*xray_files, missing]]
    assert rows[-1]["error"] and "gone.jpeg" in rows[-1]["error"]


def test_a_failed_run_leaves_no_partial_output(tiny_model, xray_files, tmp_path, monkeypatch):
    from pneumo.inference import predict

    def boom(predictor, inputs):
        yield from ()
        raise RuntimeError("network died")

    monkeypatch.setattr(predict, "stream_predictions", boom)
    out = tmp_path / "out.csv"
    with pytest.raises(RuntimeError):
        predict.predict_files(xray_files, model=tiny_model, output=out, progress=False)
    assert not out.exists() and not list(tmp_path.glob("out.csv*"))
