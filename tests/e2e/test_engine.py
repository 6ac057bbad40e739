"""The official `openai` SDK against `cocoon devnet` running the embedded engine.

With no --upstream and no --model, the devnet generates a tiny random-weight Qwen3
(a stand-in for real weights): the text is noise, but tokenization, generation,
streaming, metering and billing are the real code paths.
"""
import openai

MODEL = "tiny-random-qwen3"


def client(info):
    return openai.OpenAI(base_url=info["client_api"], api_key="unused", max_retries=0)


def test_engine_devnet_serves_the_tiny_model(engine_devnet):
    assert engine_devnet["models"] == [MODEL]
    assert [m.id for m in client(engine_devnet).models.list().data] == [MODEL]


def test_chat_completion_is_generated_metered_and_costed(engine_devnet):
    r = client(engine_devnet).chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hello!"}], max_tokens=6, temperature=0)
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6
    assert r.usage.prompt_tokens > 0
    # Coefficient 1.0, multipliers 1.0, 2 nanoTON per token.
    assert r.usage.model_extra["total_cost"] == 2 * (r.usage.prompt_tokens + r.usage.completion_tokens)


def test_streamed_chat_yields_the_same_tokens_with_usage(engine_devnet):
    c = client(engine_devnet)
    plain = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, seed=7, temperature=0)
    stream = c.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], max_tokens=5, seed=7, temperature=0,
        stream=True, stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == plain.choices[0].message.content
    assert usage is not None and usage.completion_tokens == 5
    assert usage.model_extra["total_cost"] == 2 * usage.total_tokens
