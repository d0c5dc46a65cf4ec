// Stub of power-user.js: power_user with its defaults (public/scripts/power-user.js).
export const power_user = {
    tokenizer: 99, // tokenizers.BEST_MATCH
    request_token_probabilities: false,
    relaxed_api_urls: false,
    enableZenSliders: false,
    context: { names_as_stop_strings: true },
    instruct: { enabled: false },
    single_line: false,
};
export function registerDebugFunction() {}
