"""`GET /v1/attestation` against `cocoon devnet`, checked with `cryptography` alone, as the
README's snippet does: every party signs the app's nonce with its certificate's key, and a
replayed answer does not hold for another nonce."""
import base64
import hashlib
import json
import os
import urllib.request

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature

CONTEXT = b"cocoon-rs attestation v1\0"


def verify(item, nonce):
    """The README's check: the nonce is signed by the key of the certificate sent with it."""
    cert_der = base64.b64decode(item["certificate"])
    cert = x509.load_der_x509_certificate(cert_der)
    message = CONTEXT + nonce + hashlib.sha256(cert_der).digest()
    cert.public_key().verify(base64.b64decode(item["signature"]), message)   # raises if not
    return cert


def test_every_party_signs_the_nonce(devnet):
    nonce = os.urandom(32)
    url = f"{devnet['client_api']}/attestation?nonce={nonce.hex()}"
    with urllib.request.urlopen(url, timeout=30) as r:
        answer = json.load(r)
    assert answer["nonce"] == nonce.hex()
    evidence = answer["proxies"][0]["evidence"]
    roles = sorted(e["role"] for e in evidence)
    assert roles == ["proxy", "worker", "worker"], roles    # the devnet's proxy and 2 workers
    assert answer["proxies"][0]["proxy_public_key"] == next(
        e["public_key"] for e in evidence if e["role"] == "proxy")
    for item in evidence:
        cert = verify(item, nonce)
        raw = cert.public_key().public_bytes_raw()
        assert raw.hex() == item["public_key"]
        assert item["valid"] and item["tee"] == "fake-tdx"
        if item["role"] == "worker":
            assert item["verified"]["by"] == "proxy" and item["verified"]["public_key"] == raw.hex()
        with pytest.raises(InvalidSignature):
            verify(item, os.urandom(32))                    # replayed for another nonce
