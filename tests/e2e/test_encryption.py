"""End-to-end encryption with the official `openai` SDK (examples/python/cocoon_encryption.py)
against `cocoon devnet --upstream <mock>`: the app's transport seals each request to the
devnet key manager's key and opens the answers; nothing readable crosses the gateway."""
import base64
import json
import os
import sys

import httpx2
import openai
import pytest

from conftest import MODEL, ROOT

sys.path.insert(0, os.path.join(ROOT, "examples", "python"))
import cocoon_encryption as e2e  # noqa: E402

APP_SEED = bytes(range(32))


def test_the_reference_vector_byte_for_byte():
    # cocoon-protocol-9060ce5.md §2.8.7, checked against COCOON's C++ primitives.
    km = bytes.fromhex("070ad82e6132dab32067fb720afd0060555a64f905bbec0dc2849088951b3a63")
    app = bytes.fromhex("1c28f20c3d005f3391b9f32242a00ad256b268f490ed9e4eab262d9827069636")
    assert e2e.public_key(km).hex() == "fb67d0fcd338f20e0d4957d9e82adc101d2e3513a448a3ab46052ee1b88c5818"
    shared = e2e.shared_secret(app, e2e.public_key(km))
    assert shared == e2e.shared_secret(km, e2e.public_key(app))
    assert shared.hex() == "09b518cc978c49f7563a1938e5077a83d6dd475d2165c8a2ce0e15250d4adf63"
    nonce = base64.b64encode(b"\x22" * 32).decode()
    secret = e2e._secret(shared, nonce, e2e.TO_WORKER)
    prefix = bytes([27]) + bytes(26)
    assert e2e.encrypt_data(b"Hello", secret, prefix).hex() == (
        "6775b1fd573fa4711c21c4dc98a8cb50346e15f7da1814a6c054f009719d6d62"
        "d856b948dd19bb96d53f42cdaebb4922")
    sealed = e2e.seal({"model": "m", "max_tokens": 100, "messages": [{"role": "user", "content": "Hello"}]},
                      app, e2e.public_key(km), nonce=b"\x22" * 32)
    assert sealed["model"] == "m" and sealed["max_tokens"] == 100
    assert sealed["messages"][0]["content"].startswith("ENC_")
    with pytest.raises(e2e.EncryptionError):
        e2e.decrypt_data(bytes(31), secret)


@pytest.fixture()
def sealed_client(devnet):
    key = bytes.fromhex(devnet["encryption_keys"][0])
    transport = e2e.EncryptingTransport(APP_SEED, key)
    return openai.OpenAI(base_url=devnet["client_api"], api_key="unused", max_retries=0,
                         http_client=httpx2.Client(transport=transport))


def test_the_wire_carries_no_prompt_and_no_answer(devnet):
    key = bytes.fromhex(devnet["encryption_keys"][0])
    sealed = e2e.seal({"model": MODEL, "messages": [{"role": "user", "content": "my secret"}]}, APP_SEED, key)
    r = httpx2.post(devnet["client_api"] + "/chat/completions", json=sealed, timeout=30)
    assert r.status_code == 200, r.text
    assert "my secret" not in json.dumps(sealed)
    assert "Hello from the mock model" not in r.text
    answer = e2e.open_answer(json.loads(r.text.strip()), APP_SEED, key)
    assert answer["choices"][0]["message"]["content"] == "Hello from the mock model!"
    # Only the key manager's key may have sealed it.
    with pytest.raises(e2e.EncryptionError):
        e2e.open_answer(json.loads(r.text.strip()), APP_SEED, e2e.public_key(bytes(32)))


def test_the_sdk_chats_encrypted(sealed_client):
    r = sealed_client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hello!"}])
    assert r.choices[0].message.content == "Hello from the mock model!"
    assert r.usage.prompt_tokens == 34 and r.usage.completion_tokens == 100


def test_the_sdk_streams_encrypted(sealed_client):
    stream = sealed_client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Hi"}], stream=True,
        stream_options={"include_usage": True})
    text, usage = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if chunk.usage:
            usage = chunk.usage
    assert text == "Hello from the mock model!"
    assert usage is not None and usage.total_tokens == 134


def test_a_key_nobody_issued_is_refused(devnet):
    stranger = e2e.public_key(bytes([7]) * 32)
    client = openai.OpenAI(base_url=devnet["client_api"], api_key="unused", max_retries=0,
                           http_client=httpx2.Client(transport=e2e.EncryptingTransport(APP_SEED, stranger)))
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "x"}])
    assert "unknown public key" in str(e.value)
