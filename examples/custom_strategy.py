import re

from backtrack_sampler import BacktrackSampler, BaseStrategy, Continue, Rewind


class NoDoubledWords(BaseStrategy):
    """Erase a word written twice in a row ("the the") and choose another."""

    pattern = re.compile(r"\b(\w+)\W+(\1)(?=\W)", re.IGNORECASE)
    window = 8  # tokens of recent text to look at, and to hold back

    def on_token(self, ctx, token):
        first = max(0, len(ctx.tokens) - self.window)
        tail, offset = ctx.text_from(first), ctx.char_start(first)
        new = ctx.char_start(len(ctx.tokens) - 1) - offset  # the latest token's text starts here
        for match in self.pattern.finditer(tail):
            if match.end() >= new:  # the character that completes the repeat is new
                position = ctx.token_at_char(offset + match.start(2))
                return Rewind(position, ban=(ctx.tokens[position],), reason=f"doubled {match[1]!r}")
        return Continue()

    def holdback(self, ctx):
        return self.window  # the engine emits only what we can no longer rewind


if __name__ == "__main__":
    from backtrack_sampler.models import load_llama
    from backtrack_sampler.provider.llamacpp_provider import LlamacppProvider

    provider = LlamacppProvider(load_llama())
    sampler = BacktrackSampler(provider, NoDoubledWords())
    prompt = provider.apply_chat_template([{"role": "user", "content": "Write a poem about rain."}])
    print(sampler.generate_text(prompt, max_new_tokens=60, seed=0).text)
