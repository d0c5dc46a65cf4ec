"""Where ``OpenAICompatibleProvider`` used to live; it is now in ``backtrack_sampler.provider.remote``."""

from backtrack_sampler.provider.remote.provider import MODES, Mode, OpenAICompatibleProvider
from backtrack_sampler.provider.remote.wire import BAN_BIAS, RemoteError

__all__ = ["BAN_BIAS", "MODES", "Mode", "OpenAICompatibleProvider", "RemoteError"]
