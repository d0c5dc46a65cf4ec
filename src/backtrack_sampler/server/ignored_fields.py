"""Which request fields of other servers' clients the server honours, and which it ignores.

SillyTavern 1.12.6 (``createTextGenGenerationData`` in
``public/scripts/textgen-settings.js``) sends about ninety sampler fields in
its TabbyAPI, KoboldCpp, llama.cpp and text-generation-webui (ooba) modes,
whichever backend it talks to. The server reads those of ``HONOURED`` (fields
of ``schemas.SamplingRequest``, checked like every field: a bad value is a 400
naming it) and ignores those of ``IGNORED`` whatever their type, as it ignores
any field it does not know; docs/server-dialects.md lists both.
"""

from __future__ import annotations

HONOURED: dict[str, str] = {
    "prompt": "the prompt (text or token ids)",
    "model": "the served model's id (may be left out)",
    "max_tokens": "the most tokens to generate",
    "max_new_tokens": "max_tokens under text-generation-webui's name",
    "max_length": "max_tokens under KoboldCpp's name",
    "n_predict": "max_tokens under llama.cpp's name (-1: the server's limit)",
    "temperature": "0 is greedy",
    "top_p": "nucleus mass in [0, 1]; 0 keeps the most likely token alone",
    "top_k": "0 or -1: off",
    "min_p": "0: off",
    "presence_penalty": "OpenAI's",
    "frequency_penalty": "OpenAI's",
    "n": "choices per prompt (swipes)",
    "stream": "server-sent events",
    "logprobs": "the top N log-probabilities per token",
    "seed": "negative (-1): random",
    "sampler_seed": "seed under KoboldCpp's name",
    "stop": "stop strings",
    "stopping_strings": "stop under text-generation-webui's name",
    "stop_sequence": "stop under KoboldCpp's name",
    "banned_strings": "phrases banned by backtracking (AntiSlop); one string or a list",
    "banned_tokens": "phrases (KoboldCpp) and token ids (TabbyAPI)",
    "custom_token_bans": 'token ids banned at every position ("1,2" or a list)',
    "logit_bias": "by token id or text, OpenAI's object or llama.cpp's [[id or text, bias or false]]",
    "ignore_eos": "never end at the end-of-sequence token",
    "ban_eos_token": "ignore_eos under TabbyAPI's name",
    "min_tokens": "vLLM's: no end-of-sequence token or stop string ends the generation before it",
    "dry_multiplier": "DRY repetition penalty (llama.cpp's), > 0: on",
    "dry_base": "DRY",
    "dry_allowed_length": "DRY",
    "dry_sequence_breakers": "DRY: a list, or a JSON string of one",
    "dry_penalty_last_n": "DRY: -1 or 0: the whole context",
}
"""Fields the server reads, with what they mean here."""

IGNORED: tuple[str, ...] = (
    # other samplers and penalties
    "typical_p",
    "typical",
    "repetition_penalty",
    "rep_pen",
    "repeat_penalty",
    "rep_pen_range",
    "repetition_penalty_range",
    "repeat_last_n",
    "rep_pen_slope",
    "repetition_decay",
    "encoder_repetition_penalty",
    "no_repeat_ngram_size",
    "penalty_alpha",
    "top_a",
    "tfs",
    "tfs_z",
    "epsilon_cutoff",
    "eta_cutoff",
    "mirostat_mode",
    "mirostat",
    "mirostat_tau",
    "mirostat_eta",
    "xtc_threshold",
    "xtc_probability",
    "smoothing_factor",
    "smoothing_curve",
    "skew",
    "dynamic_temperature",
    "dynatemp_low",
    "dynatemp_high",
    "dynatemp_range",
    "dynatemp_exponent",
    "temperature_last",
    "sampler_priority",
    "samplers",
    "sampler_order",
    "guidance_scale",
    "negative_prompt",
    # beam search and text-generation-webui's transformers settings
    "num_beams",
    "length_penalty",
    "early_stopping",
    "do_sample",
    "min_length",
    # constrained output
    "grammar",
    "grammar_string",
    "json_schema",
    # tokenizing, context and speed
    "add_bos_token",
    "skip_special_tokens",
    "truncation_length",
    "num_ctx",
    "num_predict",
    "max_tokens_second",
    "speculative_ngram",
    "cache_prompt",
    "n_probs",
    # SillyTavern's own
    "api_type",
    "api_server",
    "legacy_api",
)
"""Fields SillyTavern sends that the server accepts whatever their value, and ignores."""
