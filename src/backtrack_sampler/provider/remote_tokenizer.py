"""Where ``load_tokenizer`` used to live; it is now in ``backtrack_sampler.provider.remote.tokenizer``."""

from backtrack_sampler.provider.remote.tokenizer import Tokenizer, load_tokenizer

__all__ = ["Tokenizer", "load_tokenizer"]
