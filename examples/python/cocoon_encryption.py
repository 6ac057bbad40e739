"""End-to-end encryption for COCOON apps using the official `openai` Python SDK.

The app seals each request to a key manager key (COCOON protocol 3, "v1" envelopes), so
that no client gateway or proxy on the way can read the prompt; the worker that serves it
seals the answer back to the app's key. This module is the app's side, written from
COCOON's wire format (cocoon-rs `shared/reference/cocoon-protocol-9060ce5.md` §2.8):

* `seal(body, app_seed, key_manager_public_key)` / `open_answer(value, app_seed,
  key_manager_public_key)`: the envelope, for any JSON body;
* `EncryptingTransport`: an HTTP transport for the SDK's client that seals every
  `/chat/completions` and `/completions` request and opens the answers, JSON and
  streamed alike, so that application code stays plain OpenAI code:

    import httpx2, openai
    from cocoon_encryption import EncryptingTransport
    client = openai.OpenAI(
        base_url="http://127.0.0.1:10000/v1", api_key="unused",
        http_client=httpx2.Client(transport=EncryptingTransport(app_seed, km_public_key)))
    client.chat.completions.create(model=..., messages=[...])   # encrypted on the wire

`km_public_key` is a key the root contract lists (`cocoon root show`; the devnet writes
the current ones to `devnet.json` as `encryption_keys`). `app_seed` is 32 random bytes
the app keeps (its Ed25519 seed). Requires the `cryptography` package (and `httpx2`, which
the openai SDK brings, for the transport).

Run `python cocoon_encryption.py DEVNET_JSON` for a demonstration against a running
`cocoon devnet`.
"""
import base64
import hashlib
import hmac
import json
import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# Members never encrypted, at any depth (§2.8.1): routing and limits stay readable.
EXCLUDED = frozenset({
    "is_encrypted", "sender_public_key", "receiver_public_key", "encryption_nonce", "model",
    "max_completion_tokens", "max_tokens", "max_coefficient", "timeout", "debug",
    "enable_debug", "request_guid",
})
TO_WORKER = b"c"  # requests, app -> worker
TO_APP = b"w"     # answers, worker -> app
_P = 2 ** 255 - 19


class EncryptionError(ValueError):
    """A value that cannot be sealed or opened, with the reason."""


def public_key(seed: bytes) -> bytes:
    """The Ed25519 public key of a 32-byte seed."""
    return Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _x25519_private(seed: bytes) -> X25519PrivateKey:
    h = bytearray(hashlib.sha512(seed).digest()[:32])
    h[0] &= 248
    h[31] &= 127
    h[31] |= 64
    return X25519PrivateKey.from_private_bytes(bytes(h))


def _x25519_public(ed_public: bytes) -> X25519PublicKey:
    # The Montgomery u of an Edwards point: u = (1 + y) / (1 - y) mod p.
    y = int.from_bytes(ed_public, "little") & ((1 << 255) - 1)
    u = (1 + y) * pow((1 - y) % _P, _P - 2, _P) % _P
    return X25519PublicKey.from_public_bytes(u.to_bytes(32, "little"))


def shared_secret(own_seed: bytes, peer_public: bytes) -> bytes:
    """X25519 of the two Ed25519 keys converted to Curve25519 (libsodium's conversion)."""
    return _x25519_private(own_seed).exchange(_x25519_public(peer_public))


def _secret(shared: bytes, nonce_text: str, direction: bytes) -> bytes:
    return hashlib.sha256(shared + nonce_text.encode("ascii") + direction).digest()


def _keys(secret: bytes):
    k = hmac.new(secret, b"tde2e_encrypt_data", hashlib.sha512).digest()
    return k[:32], k[32:]


def _aes(enc_key: bytes, msg_id: bytes):
    a = hmac.new(enc_key, msg_id, hashlib.sha512).digest()
    return Cipher(algorithms.AES(a[:32]), modes.CBC(a[32:48]))


def encrypt_data(data: bytes, secret: bytes, prefix: bytes = None) -> bytes:
    """tde2e `encrypt_data`: a 16..31-byte prefix (its first byte its length), MAC-derived
    message id, AES-256-CBC. `prefix` is for test vectors only."""
    n = len(data)
    p = ((16 + 15 + n) & ~15) - n
    if prefix is None:
        prefix = bytes([p]) + os.urandom(p - 1)
    m = prefix + data
    enc_key, mac_key = _keys(secret)
    msg_id = hmac.new(mac_key, m + b"\0\0\0\0", hashlib.sha256).digest()[:16]
    enc = _aes(enc_key, msg_id).encryptor()
    return msg_id + enc.update(m) + enc.finalize()


def decrypt_data(data: bytes, secret: bytes) -> bytes:
    """The inverse of `encrypt_data`; raises `EncryptionError` on anything altered."""
    if len(data) < 16 or len(data) % 16:
        raise EncryptionError("ciphertext length")
    msg_id, body = data[:16], data[16:]
    enc_key, mac_key = _keys(secret)
    dec = _aes(enc_key, msg_id).decryptor()
    m = dec.update(body) + dec.finalize()
    expected = hmac.new(mac_key, m + b"\0\0\0\0", hashlib.sha256).digest()[:16]
    if not hmac.compare_digest(expected, msg_id):
        raise EncryptionError("msg_id mismatch")
    p = m[0] if m else 0
    if not 16 <= p <= len(m):
        raise EncryptionError("invalid prefix size")
    return m[p:]


def _walk(value, change):
    if isinstance(value, dict):
        return {k: (v if k in EXCLUDED else _walk(v, change)) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, change) for v in value]
    if isinstance(value, str):
        return change(value)
    return value


def seal(body: dict, app_seed: bytes, key_manager_public_key: bytes, nonce: bytes = None) -> dict:
    """The request `body` with every selected string encrypted to the key manager key,
    plus the four envelope fields."""
    nonce_text = base64.b64encode(nonce if nonce is not None else os.urandom(32)).decode()
    secret = _secret(shared_secret(app_seed, key_manager_public_key), nonce_text, TO_WORKER)
    out = _walk(body, lambda s: "ENC_" + encrypt_data(s.encode(), secret).hex())
    out.update({
        "is_encrypted": "v1",
        "sender_public_key": public_key(app_seed).hex(),
        "receiver_public_key": key_manager_public_key.hex(),
        "encryption_nonce": nonce_text,
    })
    return out


def open_answer(value: dict, app_seed: bytes, key_manager_public_key: bytes) -> dict:
    """One answer value a worker sealed to the app, opened; refuses a value sealed by
    anyone but the key manager key the request went to."""
    envelope = ("is_encrypted", "sender_public_key", "receiver_public_key", "encryption_nonce")
    if not all(isinstance(value.get(k), str) for k in envelope):
        raise EncryptionError("not an encrypted value: " + json.dumps(value)[:200])
    if bytes.fromhex(value["sender_public_key"]) != key_manager_public_key:
        raise EncryptionError("public key mismatch: the answer is not from the key manager key")
    if bytes.fromhex(value["receiver_public_key"]) != public_key(app_seed):
        raise EncryptionError("public key mismatch: the answer is for another app key")
    secret = _secret(shared_secret(app_seed, key_manager_public_key), value["encryption_nonce"], TO_APP)

    def plain(s):
        if s.startswith("ENC_"):
            return decrypt_data(bytes.fromhex(s[4:]), secret).decode()
        if s.startswith("DEC_"):
            return s[4:]
        raise EncryptionError("bad encryption method")

    body = {k: v for k, v in value.items() if k not in envelope}
    return _walk(body, plain)


def _encrypted_path(path: str) -> bool:
    return path.endswith("/chat/completions") or path.endswith("/completions")


class EncryptingTransport:
    """An `httpx2` transport for `openai.OpenAI(http_client=httpx2.Client(transport=...))`:
    seals request bodies to `key_manager_public_key` and opens answers (one JSON value, or
    SSE events as they arrive). Other requests and error answers pass unchanged."""

    def __init__(self, app_seed: bytes, key_manager_public_key: bytes, inner=None):
        import httpx2
        self._httpx = httpx2
        self.app_seed = app_seed
        self.key = key_manager_public_key
        self.inner = inner or httpx2.HTTPTransport()

    def handle_request(self, request):
        httpx = self._httpx
        if request.method != "POST" or not _encrypted_path(request.url.path):
            return self.inner.handle_request(request)
        body = json.loads(request.read())
        content = json.dumps(seal(body, self.app_seed, self.key)).encode()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() != "content-length"]
        sealed = httpx.Request(request.method, request.url, headers=headers, content=content,
                               extensions=request.extensions)
        response = self.inner.handle_request(sealed)
        if response.status_code != 200:
            return response
        kind = response.headers.get("content-type", "")
        headers = [(k, v) for k, v in response.headers.items()
                   if k.lower() not in ("content-length", "transfer-encoding")]
        if kind.startswith("text/event-stream"):
            events = type("OpenedEvents", (_OpenedEvents, httpx.SyncByteStream), {})
            return httpx.Response(200, headers=headers, stream=events(response, self),
                                  extensions=response.extensions)
        text = response.read().decode()
        values = [self._open(json.loads(line)) for line in text.splitlines() if line.strip()]
        if len(values) != 1:
            raise EncryptionError(f"expected one answer value, got {len(values)}")
        response.close()
        return httpx.Response(200, headers=headers, content=json.dumps(values[0]).encode(),
                              extensions=response.extensions)

    def _open(self, value):
        return open_answer(value, self.app_seed, self.key)

    def close(self):
        self.inner.close()


class _OpenedEvents:
    """The SSE stream of a response with every `data:` JSON opened, event by event (mixed
    with `httpx2.SyncByteStream` when used, so that this module imports without httpx2)."""

    def __init__(self, response, transport):
        self.response = response
        self.transport = transport

    def __iter__(self):
        pending = b""
        for chunk in self.response.iter_raw():
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                yield self._line(line) + b"\n"
        if pending:
            yield self._line(pending)

    def _line(self, line: bytes) -> bytes:
        text = line.decode().rstrip("\r")
        if text.startswith("data:") and text[5:].strip() != "[DONE]":
            value = self.transport._open(json.loads(text[5:]))
            return b"data: " + json.dumps(value).encode()
        return text.encode()

    def close(self):
        self.response.close()


def _demo(devnet_json: str):
    import httpx2
    import openai
    with open(devnet_json) as f:
        info = json.load(f)
    key = bytes.fromhex(info["encryption_keys"][0])
    app_seed = os.urandom(32)
    client = openai.OpenAI(base_url=info["client_api"], api_key="unused",
                           http_client=httpx2.Client(transport=EncryptingTransport(app_seed, key)))
    model = info["models"][0]
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=32)
    print("answer:", answer.choices[0].message.content)
    print("streamed:", end=" ")
    for chunk in client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": "Say hello"}], max_tokens=32,
            stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            print(chunk.choices[0].delta.content, end="", flush=True)
    print()


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        sys.exit("usage: cocoon_encryption.py PATH/TO/devnet.json")
    _demo(sys.argv[1])
