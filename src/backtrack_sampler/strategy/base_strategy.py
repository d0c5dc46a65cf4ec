"""Where ``BaseStrategy`` used to live; the contract is now in ``backtrack_sampler.core.base_strategy``."""

from backtrack_sampler.core.base_strategy import BaseStrategy

__all__ = ["BaseStrategy"]
