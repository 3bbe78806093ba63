"""The film pipeline is one stage for every face: what it prepares is what the Predictor
classifies, it travels to other processes (Ray tasks) intact, and a bad file is that film's
error, never an exception."""

from __future__ import annotations

import pickle

import numpy as np


def test_a_pickled_pipeline_prepares_the_same_film_and_the_same_answer(
    onnx_predictor, tiny_model, xray_files
):
    from pneumo.inference.pipeline import FilmPipeline

    pipeline = FilmPipeline.load(tiny_model)  # as the Ray driver builds it, no network loaded
    travelled = pickle.loads(pickle.dumps(pipeline))
    for file in xray_files:
        here, there = pipeline.prepare(file, str(file)), travelled.prepare(file, str(file))
        assert here.error is None and there.error is None
        np.testing.assert_array_equal(here.array, there.array)
        assert here.stats == there.stats
        assert here.array.shape == (3, *pipeline.input_size)
    prepared = [travelled.prepare(f, str(f)) for f in xray_files]
    assert onnx_predictor.predict_prepared(prepared) == onnx_predictor.predict_sources(xray_files)


def test_the_predictor_and_its_pipeline_measure_a_film_alike(onnx_predictor, xray_files):
    """The layout check reads the model's own layout tensors, whichever face prepared it."""
    from pneumo.inference.pipeline import FilmPipeline

    film = onnx_predictor.pipeline.decode(xray_files[0], "a film")
    alone = FilmPipeline.of(onnx_predictor.metadata, onnx_predictor.ood_tensors)
    assert alone.decode(xray_files[0], "a film").stats == film.stats
    assert film.picture.mode == "L" and min(film.picture.size) >= min(alone.input_size)


def test_a_film_that_cannot_be_read_is_its_own_error(onnx_predictor, xray_files, tmp_path):
    broken = tmp_path / "broken.jpeg"
    broken.write_bytes(b"\xff\xd8 not really a JPEG")
    films = [onnx_predictor.pipeline.prepare(f, f.name) for f in (broken, xray_files[0])]
    assert films[0].array is None and "broken.jpeg" in films[0].error
    first, second = onnx_predictor.predict_prepared(films)
    assert first.error == films[0].error and first.label is None
    assert second.error is None and second.label in onnx_predictor.metadata.class_names


def test_statistics_travel_as_numbers_and_come_back_equal():
    from pneumo.inference.pipeline import NUMBERS, InputStats

    stats = InputStats(3.5, 1.25, 40.0, 0.8, 0.1, "a CT slice")
    numbers = np.array(stats.numbers())
    assert numbers.shape == (NUMBERS,)
    assert InputStats.from_numbers(numbers, stats.header_reason) == stats
