"""The OpenAPI document says what the server really answers, and fuzzing it finds no 5xx.

The document itself must be valid OpenAPI 3.1 whose schemas speak only JSON
Schema (``openapi-spec-validator``, extra ``dev``). ``schemathesis`` (extra
``dev``) then generates requests from ``/openapi.json`` (valid ones and invalid
ones) and sends them to the app on the scripted model, in-process; every answer
must be a documented status with a documented content type and a body that
fits its schema, and never a 5xx. The document and the server must agree on
what a valid request is: an invalid one (by the document) is refused with a
4xx, and a valid one passes the request models (``server.schemas``), and is
refused only for what the document leaves to the server: a limit, the model,
an unsupported feature, never a wrong type or a missing field. The examples are
bounded and derandomized, so a run takes about a minute and finds the same
cases every time. The layer below the app (raw HTTP) is fuzzed on a socket in
``test_server_http.py``.
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


# What a schema object may hold: the keywords of JSON Schema 2020-12 and OpenAPI 3.1's additions.
SUBSCHEMA = {"not", "if", "then", "else", "items", "contains", "additionalProperties", "propertyNames"}
SUBSCHEMA |= {"unevaluatedItems", "unevaluatedProperties", "contentSchema"}
SUBSCHEMA_LISTS = {"allOf", "anyOf", "oneOf", "prefixItems"}
SUBSCHEMA_MAPS = {"properties", "patternProperties", "dependentSchemas", "$defs"}
KEYWORDS = SUBSCHEMA | SUBSCHEMA_LISTS | SUBSCHEMA_MAPS
KEYWORDS |= {"$schema", "$id", "$ref", "$anchor", "$dynamicRef", "$dynamicAnchor", "$vocabulary", "$comment"}
KEYWORDS |= {"type", "enum", "const", "multipleOf", "maximum", "exclusiveMaximum", "minimum", "exclusiveMinimum"}
KEYWORDS |= {"maxLength", "minLength", "pattern", "maxItems", "minItems", "uniqueItems", "maxContains"}
KEYWORDS |= {"minContains", "maxProperties", "minProperties", "required", "dependentRequired", "format"}
KEYWORDS |= {"contentEncoding", "contentMediaType", "title", "description", "default", "deprecated"}
KEYWORDS |= {"readOnly", "writeOnly", "examples", "discriminator", "xml", "externalDocs", "example"}


def foreign_keywords(schema, where: str = "#") -> list[str]:
    """Where ``schema`` (and every schema inside it) holds a key that is no JSON Schema / OpenAPI keyword."""
    if isinstance(schema, bool):
        return []
    found = [f"{where}/{key}" for key in schema if key not in KEYWORDS]
    for key, value in schema.items():
        if key in SUBSCHEMA:
            found += foreign_keywords(value, f"{where}/{key}")
        elif key in SUBSCHEMA_LISTS:
            found += [bad for i, member in enumerate(value) for bad in foreign_keywords(member, f"{where}/{key}/{i}")]
        elif key in SUBSCHEMA_MAPS:
            found += [
                bad for name, member in value.items() for bad in foreign_keywords(member, f"{where}/{key}/{name}")
            ]
    return found


def document_schemas(document: dict):
    """(where, schema) for every schema of ``document``: its components, bodies, responses and parameters."""
    for name, schema in document["components"]["schemas"].items():
        yield f"#/components/schemas/{name}", schema
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            bodies = [("requestBody", operation.get("requestBody", {}))]
            bodies += [(f"responses/{status}", r) for status, r in operation["responses"].items()]
            for part, body in bodies:
                for media, content in body.get("content", {}).items():
                    yield f"{where} {part} {media}", content.get("schema", {})
            for parameter in operation.get("parameters", []):
                yield f"{where} parameter {parameter['name']}", parameter.get("schema", {})


def test_the_document_is_valid_openapi_and_speaks_only_json_schema(document):
    """Pydantic's own names ("ge", "le", "min_length") are no JSON Schema: a validator would ignore those bounds."""
    from openapi_spec_validator import validate as validate_document

    validate_document(document)
    assert document["openapi"].startswith("3.1")
    foreign = [bad for where, schema in document_schemas(document) for bad in foreign_keywords(schema, where)]
    assert not foreign, foreign
    bounds = document["components"]["schemas"]["CompletionRequest"]["properties"]
    assert bounds["max_tokens"]["anyOf"][0] == {"type": "integer", "minimum": 1}
    assert bounds["prompt"]["anyOf"][2]["items"] == {"type": "integer", "minimum": 0}


def test_the_schema_walk_finds_pydantic_names():
    schema = {"anyOf": [{"type": "integer", "ge": 1}, {"type": "null"}], "properties": {"ge": {"type": "string"}}}
    assert foreign_keywords(schema) == ["#/anyOf/0/ge"]  # a property may be called "ge"; a keyword may not


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


def test_the_other_servers_answers_fit_their_schemas(document):
    """TabbyAPI's, text-generation-webui's, llama.cpp's and KoboldCpp's routes (``server.compat``) are documented."""
    http = in_process_client(fuzz_app())
    answers = {
        "TabbyModelCard": http.get("/v1/model"),
        "TabbyModelList": http.get("/v1/model/list"),
        "OobaModelInfo": http.get("/v1/internal/model/info"),
        "Props": http.get("/props"),
        "KoboldResult1": http.get("/api/v1/model"),
        "KoboldVersion": http.get("/api/extra/version"),
        "KoboldValue": http.get("/api/v1/config/max_context_length"),
        "TokensAndLength": http.post("/v1/token/encode", json={"text": "Hi"}),
        "DecodedText": http.post("/v1/internal/decode", json={"tokens": [5]}),
        "TokenCount": http.post("/v1/internal/token-count", json={"text": "Hi"}),
        "TokenizeResponse": http.post("/tokenize", json={"content": "Hi", "with_pieces": True}),
        "DetokenizeResponse": http.post("/detokenize", json={"tokens": [5]}),
        "LlamaCompletionResponse": http.post("/completion", json={"prompt": "Hi", "n_predict": 4, "n_probs": 2}),
        "KoboldResults": http.post("/api/v1/generate", json={"prompt": "Hi", "max_length": 4, "n": 2}),
        "KoboldTokenCount": http.post("/api/extra/tokencount", json={"prompt": "Hi"}),
        "KoboldAbort": http.post("/api/extra/abort"),
    }
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        validate(document, response.json(), name)
    for path in ("/completion", "/api/v1/generate", "/tokenize", "/v1/token/decode"):
        validate(document, http.post(path, json={"tokens": "x", "prompt": 5}).json(), "ErrorBody")
        assert "ErrorBody" in str(document["paths"][path]["post"]["responses"]["400"])


# -- the document and the server agree at the edges ----------------------------------------------------
# The values a boundary search tries first, for every field; a few bodies for the rules between fields.
EDGE_VALUES = [None, "", "x", "think", " 1", [], [""], ["x"], [[]], [-1], {}, {" 1": 1}, 0, -1, 1, 1.5, True]
BASES = {
    "/v1/completions": ("CompletionRequest", {"prompt": "Hi", "max_tokens": 1}),
    "/v1/chat/completions": (
        "ChatCompletionRequest",
        {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1},
    ),
}
TOOL = {"role": "tool", "content": "42", "tool_call_id": "call_1"}
EDGE_BODIES = [
    {"ban_scope": "answer"},
    {"ban_scope": "answer", "banned_strings": ["x"]},
    {"ban_scope": None, "banned_strings": []},
    {"ban_scope": {"start": "[", "end": "]"}, "banned_regex": ["x+"]},
    {"ban_scope": "outside:,x", "banned_strings": ["x"]},
    {"ban_scope": "think\n", "banned_strings": ["x"]},
    {"exempt_prompt_terms": True},
    {"exempt_prompt_terms": True, "banned_strings": ["x"]},
    {"stream_options": {"include_usage": True}},
    {"stream_options": None},
    {"logit_bias": {"5": 1, "05": 1}},
    {"logit_bias": {"+5": 1}},
    {"logit_bias": {"5\n": 1}},
    {"logit_bias": {"5": -100}},
    {"prompt": [[1], []]},
    {"prompt": ["Hi", ""]},
    {"prompt": [1, 2]},
    {"messages": [{"role": "tool"}], "ban_scope": "answer"},
    {"messages": [{"role": "tool"}]},
    {"messages": [{"role": "tool", "content": "42"}]},
    {"messages": [{"role": "tool", "content": "42", "tool_call_id": None}]},
    {"messages": [{"role": "tool", "content": None, "tool_call_id": "call_1"}]},
    {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": None}, TOOL]},
    {"top_logprobs": 2},
    {"top_logprobs": 2, "logprobs": True},
    {"top_logprobs": None, "logprobs": False},
]


def edge_cases():
    for path, (schema_name, base) in BASES.items():
        for field in sorted(REQUEST_MODELS[path].model_fields):
            for value in EDGE_VALUES:
                yield path, schema_name, {**base, field: value}
        for body in EDGE_BODIES:
            yield path, schema_name, {**base, **body}


def test_the_document_and_the_server_agree_at_the_edges(document):
    """What the document refuses the server refuses (4xx); what it accepts, the server takes or refuses for a
    reason the document leaves to it (a limit, the model, an unsupported feature), never as malformed."""
    import jsonschema_rs

    http = in_process_client(fuzz_app())
    validators = {
        name: jsonschema_rs.Draft202012Validator(
            {"$ref": f"#/components/schemas/{name}", "components": document["components"]}
        )
        for name, _ in BASES.values()
    }
    disagreements = []
    for path, schema_name, body in edge_cases():
        valid = validators[schema_name].is_valid(body)
        if valid:
            try:
                REQUEST_MODELS[path].model_validate(body)
            except ValueError as exc:
                disagreements.append(f"the document accepts {body}, the request model refuses it: {exc}")
        response = http.post(path, json=body)
        error = response.json().get("error") if response.status_code >= 400 else None
        if valid and error is not None and (response.status_code == 400 and error["code"] in MALFORMED):
            disagreements.append(f"the document accepts {body}, the server answers {response.status_code} {error}")
        elif not valid and not 400 <= response.status_code < 500:
            disagreements.append(f"the document refuses {body}, the server answers {response.status_code}")
    assert not disagreements, "\n".join(disagreements)


# -- the fuzzing ------------------------------------------------------------------------------------
from hypothesis import HealthCheck, settings  # noqa: E402 (after the skip: schemathesis may be missing)
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from backtrack_sampler.server.schemas import ChatCompletionRequest, CompletionRequest  # noqa: E402

REQUEST_MODELS = {"/v1/completions": CompletionRequest, "/v1/chat/completions": ChatCompletionRequest}
# The codes of a 400 that says the request is malformed: what the document itself must rule out.
MALFORMED = {"invalid_type", "missing_parameter", "json_invalid", "invalid_body", None}


@schemathesis.check
def valid_requests_pass_the_request_models(ctx, response, case):
    """A body the document accepts passes the request model; a 400 for it is no complaint about its form."""
    model = REQUEST_MODELS.get(case.path)
    if case.meta is None or not case.meta.generation.mode.is_positive or model is None:
        return None
    try:
        model.model_validate(case.body)
    except Exception as exc:
        raise AssertionError(f"the document accepts this body, the server's request model refuses it: {exc}") from None
    if response.status_code == 400:
        error = response.json()["error"]
        assert error["code"] not in MALFORMED, f"a body the document accepts was refused as malformed: {error}"
    return None


CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
CHECKS += [negative_data_rejection, valid_requests_pass_the_request_models]
SCHEMA = schemathesis.openapi.from_asgi("/openapi.json", fuzz_app())
# Valid and invalid requests; the schema's examples and random cases (the coverage phase would send
# thousands of boundary cases, about ten minutes on two cores).
SCHEMA.config.phases.update(phases=["examples", "fuzzing"])
SCHEMA.config.generation.update(deterministic=True, database="none")
# An invalid request is refused with one of the statuses the document lists (never 2xx, never 5xx).
SCHEMA.config.checks.negative_data_rejection.expected_statuses = ["400", "401", "403", "404", "405", "413"]


# The other servers' routes (server.compat, by their tags) take fewer examples: most only tokenize, and the
# generating ones turn their body into a /v1/completions request, fuzzed above with 200.
COMPAT_TAGS = "^(TabbyAPI|text-generation-webui|llama\\.cpp server|KoboldCpp)$"


@SCHEMA.exclude(tag_regex=COMPAT_TAGS).parametrize()
@settings(max_examples=200, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_finds_no_5xx_and_every_answer_fits_the_document(case):
    case.call_and_validate(checks=CHECKS)


@SCHEMA.include(tag_regex=COMPAT_TAGS).parametrize()
@settings(max_examples=60, derandomize=True, deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_fuzzing_the_other_servers_routes_finds_no_5xx(case):
    case.call_and_validate(checks=CHECKS)
