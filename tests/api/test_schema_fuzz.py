"""Schemathesis: requests generated from the OpenAPI schema never get a 5xx."""

from __future__ import annotations

import pytest


@pytest.mark.slow
def test_no_server_errors_from_schema_fuzzing(keyed_client, api_key):
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.checks import not_a_server_error

    # the schema needs the key too (PNEUMO_PUBLIC_DOCS is off)
    schema = schemathesis.openapi.from_asgi(
        "/openapi.json", keyed_client.app, headers={"X-API-Key": api_key}
    )
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.path for op in operations} == {"/v1/predict", "/v1/health", "/v1/ready", "/v1/model"}
    seen: dict[str, list[int]] = {}
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=12, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def check(case):
            case.headers = {**(case.headers or {}), "X-API-Key": api_key}
            response = case.call()
            seen.setdefault(case.path, []).append(response.status_code)
            assert response.status_code < 500, (case.path, response.status_code, response.text)
            case.validate_response(response, checks=[not_a_server_error])

        check()
    assert set(seen) == {op.path for op in operations}
