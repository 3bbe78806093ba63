"""What an operator watches (issue 19): /metrics in Prometheus text format counts the requests
and images a client sent, and every answer carries a request id."""

from __future__ import annotations

import io

import pytest
from PIL import Image


def _scrape(client, **headers) -> dict[tuple[str, tuple], float]:
    """/metrics parsed by Prometheus's own parser: {(sample name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    r = client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain; version=")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def _colour_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (96, 96), (200, 30, 30)).save(buf, format="JPEG")
    return buf.getvalue()


def test_metrics_count_the_requests_and_images_a_client_sent(
    keyed_client, api_key, make_jpeg, api_predictor
):
    keyed = {"X-API-Key": api_key}
    files = [
        ("files", ("film.jpeg", make_jpeg(1), "image/jpeg")),
        ("files", ("red.jpeg", _colour_jpeg(), "image/jpeg")),  # not assessed: a colour image
        ("files", ("cut.jpeg", make_jpeg(2)[:300], "image/jpeg")),  # unreadable
    ]
    r = keyed_client.post("/v1/predict", files=files, headers=keyed)
    assert r.status_code == 200 and r.json()["results"][1]["ood"] is True
    assert keyed_client.post("/v1/predict", files=files[:1]).status_code == 401  # no key
    assert keyed_client.get("/no/such/page", headers=keyed).status_code == 404

    got = _scrape(keyed_client, **keyed)
    predict_ok = (("method", "POST"), ("route", "/v1/predict"), ("status", "200"))
    assert got[("pneumo_http_requests_total", predict_ok)] == 1
    assert got[("pneumo_http_requests_total", predict_ok[:2] + (("status", "401"),))] == 1
    other = (("method", "GET"), ("route", "other"), ("status", "404"))
    assert got[("pneumo_http_requests_total", other)] == 1  # never the raw path as a label
    latency = ("pneumo_http_request_duration_seconds_count", (("route", "/v1/predict"),))
    assert got[latency] == 2
    engine = (("backend", api_predictor.backend), ("precision", api_predictor.precision))
    assert got[("pneumo_images_total", engine)] == 2  # the film and the colour image
    assert got[("pneumo_images_ood_total", ())] == 1
    assert got[("pneumo_images_unreadable_total", ())] == 1
    assert got[("pneumo_images_in_flight", ())] == 0
    assert got[("pneumo_batch_queue_depth", ())] == 0
    assert got[("pneumo_model_ready", ())] == 1


def test_metrics_need_the_key_unless_public(make_client, api_key):
    with make_client(api_key=api_key) as client:
        assert client.get("/metrics").status_code == 401
    with make_client(api_key=api_key, public_metrics=True) as client:
        assert ("pneumo_model_ready", ()) in _scrape(client)


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        ("trace-4bf92f3577b34da6", True),
        ("a" * 129, False),  # too long
        ("two words", False),
        ("x\u00e9", False),  # not ASCII
    ],
)
def test_every_answer_carries_a_request_id(keyed_client, sent, kept):
    r = keyed_client.get("/v1/model", headers={"X-Request-ID": sent.encode()})
    assert r.status_code == 401  # refused before the app: the id is there all the same
    rid = r.headers["X-Request-ID"]
    if kept:
        assert rid == sent
    else:
        assert rid != sent and len(rid) == 32 and int(rid, 16) >= 0
    other = keyed_client.get("/v1/health").headers["X-Request-ID"]
    assert other != rid and len(other) == 32  # a new one for each request without its own


def test_json_logs_on_request_carry_the_request_id_and_the_access_fields(monkeypatch):
    """PNEUMO_LOG_FORMAT=json: every line a log shipper reads is one JSON object, pneumo's own
    records and uvicorn's access lines alike, each with its request id; a bad value is named.
    The formatters come from the very configuration uvicorn is given, on loggers of this test
    only (the process's logging stays as it was)."""
    import io
    import json
    import logging
    import logging.config

    from pneumo.api.request_id import RequestIdFilter, current_request_id, log_config
    from pneumo.errors import PneumoError

    monkeypatch.setenv("PNEUMO_LOG_FORMAT", "json")
    config = log_config()
    make = logging.config.DictConfigurator(config).configure_formatter

    def logger(name: str, formatter: str) -> tuple[logging.Logger, io.StringIO]:
        stream = io.StringIO()
        handler = logging.StreamHandler(stream)
        handler.setFormatter(make(dict(config["formatters"][formatter])))
        handler.addFilter(RequestIdFilter())
        own = logging.Logger(name)  # not registered: no global logger is touched
        own.addHandler(handler)
        return own, stream

    records, records_out = logger("pneumo.api.test", "default")
    access_log, access_out = logger("uvicorn.access", "access")
    token = current_request_id.set("req-42")
    try:
        records.info("classified %d images", 3)
        access_log.info(
            '%s - "%s %s HTTP/%s" %d', "127.0.0.1:5000", "POST", "/v1/predict", "1.1", 200
        )
    finally:
        current_request_id.reset(token)
    own = json.loads(records_out.getvalue().splitlines()[-1])
    access = json.loads(access_out.getvalue().splitlines()[-1])
    assert own["message"] == "classified 3 images" and own["request_id"] == "req-42"
    assert own["name"] == "pneumo.api.test" and own["levelname"] == "INFO"
    assert access["request_id"] == "req-42" and access["status_code"] == 200
    assert access["request_line"] == "POST /v1/predict HTTP/1.1"
    monkeypatch.setenv("PNEUMO_LOG_FORMAT", "xml")
    with pytest.raises(PneumoError, match="PNEUMO_LOG_FORMAT must be one of text, json"):
        log_config()
