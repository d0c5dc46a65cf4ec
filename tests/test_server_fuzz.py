"""The OpenAPI document says what the server really answers, and fuzzing it finds no 5xx.

``schemathesis`` (extra ``dev``) generates requests from ``/openapi.json`` (valid
ones and invalid ones) and sends them to the app on the scripted model,
in-process; every answer must be a documented status with a documented content
type and a body that fits its schema, and never a 5xx. The examples are
bounded and derandomized, so a run takes about a minute and finds the same
cases every time.
"""

from __future__ import annotations

import pytest

from server_support import MODEL, OCEAN, in_process_client, make_app, scripted_provider

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")
schemathesis = pytest.importorskip("schemathesis", reason="schemathesis is not installed (extra: dev)")

GENERATION_ROUTES = {"/v1/completions": "CompletionResponse", "/v1/chat/completions": "ChatCompletionResponse"}
ERROR_STATUSES = {"400", "401", "403", "404", "413"}
# Small limits: every generated request stays cheap on the scripted model.
LIMITS = {"max_tokens_limit": 8, "max_n": 2, "max_choices": 4, "max_bans": 8, "max_rewinds_limit": 16}


def fuzz_app(**kwargs):
    return make_app(scripted_provider(context_length=256), **LIMITS, **kwargs)


@pytest.fixture(scope="module")
def document() -> dict:
    return in_process_client(fuzz_app()).get("/openapi.json").json()


def validate(document: dict, instance, schema_name: str) -> None:
    """``instance`` fits ``#/components/schemas/<schema_name>`` of ``document`` (JSON Schema 2020-12)."""
    import jsonschema_rs  # installed with schemathesis

    schema = {"$ref": f"#/components/schemas/{schema_name}", "components": document["components"]}
    jsonschema_rs.Draft202012Validator(schema).validate(instance)


def test_the_document_lists_the_statuses_the_server_sends(document):
    for path, model in GENERATION_ROUTES.items():
        responses = document["paths"][path]["post"]["responses"]
        assert "422" not in responses  # a body that fails validation is a 400
        assert ERROR_STATUSES <= set(responses)
        for status in ERROR_STATUSES:
            assert responses[status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
        ok = responses["200"]["content"]
        assert ok["application/json"]["schema"] == {"$ref": f"#/components/schemas/{model}"}
        assert ok["text/event-stream"]["schema"]["required"] == ["data"]  # one event
    for path, operations in document["paths"].items():
        for operation in operations.values():
            assert "422" not in operation["responses"], path
            assert all(r.get("content", {"x": {"schema": {"x": 1}}}) for r in operation["responses"].values())
    assert "HTTPValidationError" not in document["components"]["schemas"]
    error = document["components"]["schemas"]["ErrorDetail"]
    assert set(error["required"]) == {"message", "type", "param", "code"}


def test_real_answers_fit_their_schemas(document):
    http = in_process_client(fuzz_app())
    body = {"model": MODEL, "prompt": ["Hi", "A"], "max_tokens": 6, "logprobs": 2, "n": 2}
    body.update(banned_strings=["vast"], backtrack_events=True, temperature=0)
    validate(document, http.post("/v1/completions", json=body).json(), "CompletionResponse")
    chat = {"model": MODEL, "messages": OCEAN, "max_tokens": 6, "logprobs": True, "top_logprobs": 2}
    validate(document, http.post("/v1/chat/completions", json=chat).json(), "ChatCompletionResponse")
    validate(document, http.get("/v1/models").json(), "ModelList")
    validate(document, http.get(f"/v1/models/{MODEL}").json(), "ModelCard")
    validate(document, http.get("/health").json(), "Health")
    for response in (http.post("/v1/completions", json={"prompt": 5}), http.get("/v1/models/other")):
        validate(document, response.json(), "ErrorBody")
    not_allowed = http.delete("/v1/completions")
    assert not_allowed.status_code == 405 and "POST" in not_allowed.headers["allow"]
    validate(document, not_allowed.json(), "ErrorBody")


# -- the fuzzing ------------------------------------------------------------------------------------
from hypothesis import HealthCheck, settings  # noqa: E402 (after the skip: schemathesis may be missing)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app())
# Valid and invalid requests; the schema's examples and random cases (the coverage phase would send
# thousands of boundary cases, about ten minutes on two cores).
SCHEMA.config.phases.update(phases=["examples", "fuzzing"])
SCHEMA.config.generation.update(deterministic=True, database="none")


@SCHEMA.parametrize()
@settings(max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_finds_no_5xx_and_every_answer_fits_the_document(case):
    case.call_and_validate(checks=CHECKS)
