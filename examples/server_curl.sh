curl -s http://127.0.0.1:8000/v1/chat/completions \
  -H "Content-Type: application/json" \
  -d '{
    "model": "SmolLM2-135M-Instruct",
    "messages": [{"role": "user", "content": "Tell me about the ocean."}],
    "max_tokens": 60,
    "temperature": 0,
    "banned_strings": ["vast", "mysterious"]
  }'
