"""Where ``BaseProvider`` used to live; the contract is now in ``backtrack_sampler.core.base_provider``."""

from backtrack_sampler.core.base_provider import BaseProvider, GenerationSetup

__all__ = ["BaseProvider", "GenerationSetup"]
