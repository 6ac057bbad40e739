"""The official `openai` Python SDK against `cocoon devnet --upstream <mock>`."""
import openai
import pytest

from conftest import MODEL


@pytest.fixture()
def client(devnet):
    # No SDK retries: every status must be the first answer's.
    return openai.OpenAI(base_url=devnet["client_api"], api_key="unused", max_retries=0)


def test_devnet_json_describes_the_network(devnet):
    assert devnet["client_api"].startswith("http://127.0.0.1:")
    assert devnet["client_api"].endswith("/v1")
    assert ":" in devnet["proxy_client_endpoint"] and ":" in devnet["proxy_worker_endpoint"]
    assert len(bytes.fromhex(devnet["proxy_public_key"])) == 32
    assert devnet["models"] == [MODEL]


def test_chat_completion_carries_usage_and_cost(client):
    r = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}])
    assert r.choices[0].message.content == "Hello from the mock model!"
    assert r.usage.prompt_tokens == 34 and r.usage.completion_tokens == 100
    # 134 adjusted tokens at coefficient 1.0 and 2 nanoTON per token.
    assert r.usage.model_extra["total_cost"] == 268
    assert r.usage.model_extra["prompt_total_cost"] == 68


def test_streamed_chat_with_include_usage(client):
    stream = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True})
    text, usage, chunks = "", None, 0
    for chunk in stream:
        chunks += 1
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
        if chunk.usage is not None:
            usage = chunk.usage
    assert text == "Hello from the mock model!"
    assert chunks >= 6
    assert usage is not None and usage.model_extra["total_cost"] == 268


def test_completions_create(client):
    r = client.completions.create(model=MODEL, prompt="Say hi")
    assert r.choices[0].text == "Hello from the mock model!"
    assert r.usage.model_extra["total_cost"] == 268


def test_models_list_shows_workers(client, devnet):
    models = client.models.list()
    ids = [m.id for m in models.data]
    assert ids == [MODEL]
    workers = models.data[0].model_extra["workers"]
    assert len(workers) == devnet["workers"]
    assert all(w["coefficient"] == 1000 for w in workers)


def test_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.status_code == 404
    assert e.value.body["code"] == "model_not_found"


def test_malformed_request_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"timeout": "soon"})
    assert e.value.status_code == 400


def test_no_worker_within_price_is_rate_limited(client):
    with pytest.raises(openai.RateLimitError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"max_coefficient": 1})
    assert e.value.status_code == 429
    assert "coefficient=1000" in e.value.message


def test_balance_too_low_is_payment_required(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       max_tokens=2_000_000_000)
    assert e.value.status_code == 402
    assert e.value.body["code"] == "insufficient_balance"


def test_request_timeout_is_gateway_timeout(client):
    with pytest.raises(openai.APIStatusError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"timeout": 0.5, "mock": {"delay_ms": 3000}})
    assert e.value.status_code == 504


def test_upstream_error_status_passes_through(client):
    with pytest.raises(openai.InternalServerError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}],
                                       extra_body={"mock": {"status": 500}})
    assert e.value.status_code == 500


def test_audio_transcription_in_every_format(client, tmp_path):
    audio = tmp_path / "hello.wav"
    audio.write_bytes(bytes(range(256)) * 40)
    with open(audio, "rb") as f:
        r = client.audio.transcriptions.create(model=MODEL, file=f)
    assert r.text == "heard 10240 bytes"
    # Metered and priced like any request: 40 + 6 tokens at 2 nanoTON each.
    assert r.usage.model_extra["total_cost"] == 92
    with open(audio, "rb") as f:
        srt = client.audio.transcriptions.create(model=MODEL, file=f, response_format="srt")
    assert srt == "1\n00:00:00,000 --> 00:00:02,500\nheard 10240 bytes\n\n"
    with open(audio, "rb") as f:
        text = client.audio.translations.create(model=MODEL, file=f, response_format="text")
    assert text.strip() == "heard 10240 bytes"
    with open(audio, "rb") as f:
        verbose = client.audio.transcriptions.create(model=MODEL, file=f, response_format="verbose_json")
    assert verbose.duration == 2.5 and verbose.segments[0].end == 2.5
    # No token usage from the model server: billed by duration, 10 tokens a second.
    assert verbose.usage.type == "duration" and verbose.usage.model_extra["total_cost"] == 50


def test_an_empty_audio_file_is_bad_request(client):
    with pytest.raises(openai.BadRequestError) as refused:
        client.audio.transcriptions.create(model=MODEL, file=("empty.wav", b""))
    assert "'file' is required" in str(refused.value)


def test_embeddings_as_the_sdk_asks_for_them(client):
    # The SDK asks for base64 and decodes it.
    r = client.embeddings.create(model=MODEL, input=["first", "second"], dimensions=4)
    assert [d.embedding for d in r.data] == [[0.0, 0.5, 1.0, 1.5], [1.0, 1.5, 2.0, 2.5]]
    assert r.usage.prompt_tokens == 10
    # Billed as prompt tokens: 10 at 2 nanoTON each.
    assert r.usage.model_extra["total_cost"] == 20
    floats = client.embeddings.create(model=MODEL, input="one", encoding_format="float")
    assert len(floats.data[0].embedding) == 8


WEATHER = [{"type": "function", "function": {
    "name": "get_weather", "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


def test_tool_calls_and_their_history_round_trip(client):
    question = {"role": "user", "content": "Weather in Dubai?"}
    r = client.chat.completions.create(model=MODEL, messages=[question], tools=WEATHER,
                                       tool_choice="auto", parallel_tool_calls=False)
    call = r.choices[0].message.tool_calls[0]
    assert r.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and call.function.arguments == '{"city": "Dubai"}'
    history = [question, r.choices[0].message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": call.id, "content": "sunny, 31 C"}]
    answer = client.chat.completions.create(model=MODEL, messages=history, tools=WEATHER)
    assert answer.choices[0].message.content == "The tool said: sunny, 31 C"


def test_tool_calls_stream_as_deltas(client):
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Weather?"}],
                                            tools=WEATHER, stream=True, stream_options={"include_usage": True})
    arguments, name, usage = "", None, None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                name = name or delta.function.name
                arguments += delta.function.arguments or ""
        usage = chunk.usage or usage
    assert name == "get_weather" and arguments == '{"city": "Dubai"}'
    assert usage.model_extra["total_cost"] == 268
