"""The official `openai` SDK against `cocoon devnet` running the embedded engine.

With no --upstream and no --model, the devnet generates a tiny random-weight Qwen3
(a stand-in for real weights): the text is noise, but tokenization, generation,
streaming, metering and billing are the real code paths.
"""
import openai

MODEL = "tiny-random-qwen3"


def client(info):
    return openai.OpenAI(base_url=info["client_api"], api_key="unused", max_retries=0)


SPEECH = "tiny-random-whisper"
EMBEDDING = "tiny-random-qwen3-embedding"


def test_engine_devnet_serves_the_tiny_models(engine_devnet):
    assert engine_devnet["models"] == [MODEL, SPEECH, EMBEDDING]
    models = {m.id: m.model_extra["endpoints"] for m in client(engine_devnet).models.list().data}
    # Each model says what its workers serve.
    assert models == {
        MODEL: ["/v1/chat/completions", "/v1/completions"],
        SPEECH: ["/v1/audio/transcriptions", "/v1/audio/translations"],
        EMBEDDING: ["/v1/embeddings"],
    }


def wav(seconds=2.0, rate=16000):
    """A 16-bit mono WAV of a 440 Hz tone."""
    import io
    import math
    import struct
    import wave
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(b"".join(struct.pack("<h", int(9000 * math.sin(2 * math.pi * 440 * i / rate)))
                               for i in range(int(seconds * rate))))
    return buf.getvalue()


def test_audio_is_transcribed_by_the_embedded_whisper(engine_devnet):
    c = client(engine_devnet)
    # A budget: random weights rarely end on their own.
    t = c.audio.transcriptions.create(model=SPEECH, file=("tone.wav", wav()), extra_body={"max_tokens": 4})
    assert isinstance(t.text, str)
    # Billed by duration: 2 s at 10 tokens a second, 2 nanoTON a token.
    assert t.usage.type == "duration" and t.usage.model_extra["total_cost"] == 40
    srt = c.audio.translations.create(model=SPEECH, file=("tone.wav", wav()), response_format="srt",
                                      extra_body={"max_tokens": 4})
    assert srt == "" or srt.startswith("1\n00:00:")


def test_embeddings_come_from_the_embedded_model(engine_devnet):
    e = client(engine_devnet).embeddings.create(model=EMBEDDING, input=["cats", "dogs"], dimensions=16)
    assert [len(d.embedding) for d in e.data] == [16, 16]
    norm = sum(x * x for x in e.data[0].embedding) ** 0.5
    assert abs(norm - 1.0) < 1e-3
    assert e.usage.model_extra["total_cost"] == 2 * e.usage.prompt_tokens


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
