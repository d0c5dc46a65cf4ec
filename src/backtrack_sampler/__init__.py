"""Backtrack Sampler: LLM sampling strategies that can rewind the latest tokens.

Importing this package imports neither torch, transformers nor llama_cpp:
each provider imports its backend when it is constructed.
"""

from backtrack_sampler.core.base_strategy import BaseStrategy
from backtrack_sampler.core.budget import RewindBudget
from backtrack_sampler.core.context import GenerationContext
from backtrack_sampler.core.decisions import Continue, Decision, Rewind, Stop
from backtrack_sampler.core.engine import BacktrackSampler, GenerationResult
from backtrack_sampler.core.events import (
    Event,
    FinishEvent,
    GenerationStats,
    RewindEvent,
    RewindRefusedEvent,
    TextEvent,
)
from backtrack_sampler.core.sampling import SamplingParams
from backtrack_sampler.strategy.adaptive_temperature_strategy import AdaptiveTemperatureStrategy
from backtrack_sampler.strategy.antislop_strategy import AntiSlopStrategy
from backtrack_sampler.strategy.ban_rules import BanPhrase, BanRegex, load_ban_list
from backtrack_sampler.strategy.chain_strategy import ChainStrategy
from backtrack_sampler.strategy.creative_writing_strategy import CreativeWritingStrategy
from backtrack_sampler.strategy.debug_strategy import DebugStrategy
from backtrack_sampler.strategy.dry_strategy import DryStrategy
from backtrack_sampler.strategy.human_guidance_strategy import HumanGuidanceStrategy
from backtrack_sampler.strategy.json_strategy import JsonStrategy
from backtrack_sampler.strategy.loop_guard_strategy import LoopGuardStrategy
from backtrack_sampler.strategy.replace_strategy import ReplaceStrategy
from backtrack_sampler.strategy.slop_list import default_slop_list

__version__ = "0.1.0"

__all__ = [
    "AdaptiveTemperatureStrategy",
    "AntiSlopStrategy",
    "BacktrackSampler",
    "BanPhrase",
    "BanRegex",
    "BaseStrategy",
    "ChainStrategy",
    "Continue",
    "CreativeWritingStrategy",
    "DebugStrategy",
    "Decision",
    "DryStrategy",
    "Event",
    "FinishEvent",
    "GenerationContext",
    "GenerationResult",
    "GenerationStats",
    "HumanGuidanceStrategy",
    "JsonStrategy",
    "LoopGuardStrategy",
    "ReplaceStrategy",
    "Rewind",
    "RewindBudget",
    "RewindEvent",
    "RewindRefusedEvent",
    "SamplingParams",
    "Stop",
    "TextEvent",
    "default_slop_list",
    "load_ban_list",
]
