"""Model backends. Each concrete provider imports its backend lazily."""

from backtrack_sampler.provider.base_provider import BaseProvider

__all__ = ["BaseProvider"]
