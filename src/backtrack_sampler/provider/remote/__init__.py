"""Generation through a remote engine with an OpenAI-compatible ``/v1/completions`` (vLLM, SGLang, our server).

- ``provider``: ``OpenAICompatibleProvider``, the provider the engine drives.
- ``wire``: the request bodies and the answers of the completions API.
- ``http``: sending a request, with retries and an injectable wait.
- ``stream``: the tokens of one (streamed) completion, received as they come.
- ``tokenizer``: the served model's tokenizer, loaded locally.

Nothing here imports ``httpx`` until a provider is made.
"""

from backtrack_sampler.provider.remote.provider import MODES, Mode, OpenAICompatibleProvider
from backtrack_sampler.provider.remote.wire import BAN_BIAS, RemoteError

__all__ = ["BAN_BIAS", "MODES", "Mode", "OpenAICompatibleProvider", "RemoteError"]
