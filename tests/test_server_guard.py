"""What every request passes before it is routed: its Host (DNS rebinding), the API key, the body size.

On the scripted model, in-process (``server_support.scripted_client``); about a second.
"""

from __future__ import annotations

import pytest

from server_support import MODEL, in_process_client, make_app, scripted_client, scripted_provider

pytest.importorskip("fastapi", reason="FastAPI is not installed (extra: server)")

COMPLETIONS = "/v1/completions"
BODY = {"model": MODEL, "prompt": "Hi", "max_tokens": 2}


def assert_error(response, status, code):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == code, error
    assert error["type"] == "invalid_request_error"
    return error


# -- Host -------------------------------------------------------------------------------------------
def test_a_host_the_server_does_not_answer_to_is_a_403():
    http = scripted_client()  # the tests' hosts: testserver, 127.0.0.1, localhost
    assert http.post(COMPLETIONS, json=BODY).status_code == 200
    for host in ("evil.example", "evil.example:8000", "127.0.0.1.evil.example", "localhostx"):
        error = assert_error(http.post(COMPLETIONS, json=BODY, headers={"host": host}), 403, "host_not_allowed")
        assert "--allowed-host" in error["message"]
    assert_error(http.get("/health", headers={"host": "evil.example"}), 403, "host_not_allowed")
    assert_error(http.get("/", headers={"host": "evil.example"}), 403, "host_not_allowed")


def test_by_default_an_app_answers_only_to_loopback_names():
    from fastapi.testclient import TestClient

    from backtrack_sampler.server import create_app

    app = create_app(scripted_provider(), MODEL)
    assert_error(TestClient(app).get("/health"), 403, "host_not_allowed")  # Host: testserver
    for host in ("127.0.0.1:8000", "localhost", "LOCALHOST.:8000", "[::1]:8000"):
        assert TestClient(app).get("/health", headers={"host": host}).status_code == 200, host
    anywhere = in_process_client(make_app(scripted_provider(), allowed_hosts=["*"]))
    assert anywhere.get("/health", headers={"host": "any.example"}).status_code == 200


def test_the_hosts_of_a_bound_address():
    import socket

    from backtrack_sampler.cli.serve import allowed_hosts
    from backtrack_sampler.server.settings import LOOPBACK_HOSTS, ServerSettings, hosts_for_bind

    assert hosts_for_bind("127.0.0.1") == hosts_for_bind("localhost") == hosts_for_bind("::1") == LOOPBACK_HOSTS
    assert hosts_for_bind("0.0.0.0") == (*LOOPBACK_HOSTS, socket.gethostname().lower())
    assert hosts_for_bind("192.168.1.5") == ("192.168.1.5",)
    assert hosts_for_bind("fe80::1") == ("[fe80::1]",)
    assert allowed_hosts("127.0.0.1", ["my-box.lan"]) == (*LOOPBACK_HOSTS, "my-box.lan")
    settings = ServerSettings(MODEL, allowed_hosts=allowed_hosts("10.0.0.2", ["My-Box.lan"]))
    assert settings.host_allowed("my-box.lan:8000") and settings.host_allowed("10.0.0.2:80")
    assert not settings.host_allowed("127.0.0.1")
    with pytest.raises(ValueError, match="allowed_hosts"):
        ServerSettings(MODEL, allowed_hosts="localhost")


# -- the API key ------------------------------------------------------------------------------------
def test_the_api_key_is_checked_before_the_body_is_parsed():
    http = scripted_client(api_key="s3cret")
    json_headers = {"content-type": "application/json"}
    assert_error(http.post(COMPLETIONS, content=b"{not json", headers=json_headers), 401, "invalid_api_key")
    assert_error(http.post(COMPLETIONS, content=b"x" * 10_000_000, headers=json_headers), 401, "invalid_api_key")
    assert_error(http.get("/v1/nothing"), 401, "invalid_api_key")
    keyed = {**json_headers, "Authorization": "Bearer s3cret"}
    assert_error(http.post(COMPLETIONS, content=b"{not json", headers=keyed), 400, "json_invalid")
    assert http.post(COMPLETIONS, json=BODY, headers={"Authorization": "Bearer s3cret"}).status_code == 200


# -- the body size ----------------------------------------------------------------------------------
def test_an_oversize_body_is_a_413_before_it_is_parsed():
    http = scripted_client(max_body_bytes=4096)
    big = {**BODY, "prompt": "Hi " * 2000}
    error = assert_error(http.post(COMPLETIONS, json=big), 413, "request_too_large")
    assert "4096" in error["message"] and "Content-Length" in error["message"]

    def chunks():  # no Content-Length: counted as it arrives
        yield b'{"prompt": "'
        for _ in range(100):
            yield b"Hi " * 100
        yield b'"}'

    chunked = http.post(COMPLETIONS, content=chunks(), headers={"content-type": "application/json"})
    assert_error(chunked, 413, "request_too_large")
    assert http.post(COMPLETIONS, json=BODY).status_code == 200  # under the limit: served


def test_a_body_sent_in_chunks_under_the_limit_is_served():
    http = scripted_client()

    def chunks():
        yield b'{"model": "smollm2-test", '
        yield b'"prompt": "Hi", "max_tokens": 2}'

    response = http.post(COMPLETIONS, content=chunks(), headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] == 2
