"""The HTTP exchanges with the remote engine: ``POST /completions`` with retries, ``GET /models``.

A connection error, a 429 or a 5xx is retried up to ``Retry.max_retries``
times, waiting ``base_delay * 2**attempt`` seconds before each retry. The wait
goes through ``Retry.sleep`` (``time.sleep`` by default), so tests inject one
that records the delays instead of sleeping. ``httpx`` is imported only when a
request is sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from backtrack_sampler.provider.remote.wire import RemoteError, error_message


@dataclass(frozen=True)
class Retry:
    """When and how long to wait before sending a failed request again.

    Attributes:
        max_retries: retries of a request after a connection error, a 429 or a 5xx.
        base_delay: seconds before the first retry; each next one waits twice as long.
        sleep: waits a number of seconds (``time.sleep``; tests record instead).
    """

    max_retries: int = 2
    base_delay: float = 0.5
    sleep: Callable[[float], None] = time.sleep

    def wait(self, attempt: int) -> None:
        """Wait before retry number ``attempt + 1`` (``attempt`` counts from 0)."""
        self.sleep(self.base_delay * 2**attempt)


def post(client: Any, url: str, body: dict[str, Any], stream: bool, retry: Retry, answered: Callable[[], None]) -> Any:
    """POST ``body`` to ``url``, retrying what ``retry`` allows; the response, with status 200.

    ``answered`` is called for every request the server answered (a counter).
    A streamed response that is not used is read and closed.

    Raises:
        RemoteError: the server cannot be reached, or answered another status
            (``RemoteError.status``) after the retries.
    """
    import httpx

    for attempt in range(retry.max_retries + 1):
        again = attempt < retry.max_retries
        try:
            request = client.build_request("POST", url, json=body)
            response = client.send(request, stream=stream)
        except httpx.TransportError as exc:
            if again:
                retry.wait(attempt)
                continue
            raise RemoteError(f"cannot reach {url}: {exc}") from exc
        answered()
        if response.status_code == 200:
            return response
        if stream:
            response.read()
            response.close()
        if again and (response.status_code == 429 or response.status_code >= 500):
            retry.wait(attempt)
            continue
        raise RemoteError(f"{url} answered {response.status_code}: {error_message(response)}", response.status_code)
    raise AssertionError("unreachable")  # pragma: no cover


def served_context_length(client: Any, base_url: str, model: str) -> int | None:
    """The ``max_model_len`` ``GET /models`` lists for ``model``; ``None`` when the server says nothing.

    Raises:
        RemoteError: the server cannot be reached.
        ValueError: the server lists its models and ``model`` is not among them.
    """
    import httpx

    url = base_url + "/models"
    try:
        response = client.get(url)
    except httpx.TransportError as exc:
        raise RemoteError(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        return None  # not every server lists its models; the engine then needs max_new_tokens
    try:
        models = response.json().get("data") or []
    except (ValueError, AttributeError):
        return None
    for entry in models:
        if isinstance(entry, dict) and entry.get("id") == model:
            length = entry.get("max_model_len")
            return length if isinstance(length, int) and length > 0 else None
    served = ", ".join(repr(e.get("id")) for e in models if isinstance(e, dict))
    raise ValueError(f"model {model!r} is not served at {base_url} (served: {served or 'none'})")
