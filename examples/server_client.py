"""Stream a chat answer from `backtrack-sampler serve` with the official openai client."""

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="unused")

# Extension fields ride in extra_body: banned phrases are erased as soon as they appear and rewritten.
stream = client.chat.completions.create(
    model="SmolLM2-135M-Instruct",
    messages=[{"role": "user", "content": "Tell me about the ocean."}],
    max_tokens=60,
    temperature=0,
    stream=True,
    extra_body={"banned_strings": ["vast", "mysterious"]},
)
for chunk in stream:
    if chunk.choices:
        print(chunk.choices[0].delta.content or "", end="", flush=True)
print()
