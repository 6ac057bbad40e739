"""API keys on the client gateway with the official `openai` SDK: `cocoon client keys`
issues and revokes them while the devnet runs; valid keys work, unknown and revoked ones
get 401, a key over its limit 402, over its rate 429; keys and their spending survive a
restart of the devnet."""
import os
import subprocess
import sys
import tempfile

import openai
import pytest

from conftest import HERE, MODEL, ROOT, free_port, wait_for

COCOON = os.environ.get("COCOON_BIN", os.path.join(ROOT, "target", "debug", "cocoon"))


def start(state, upstream_port, http_port):
    """Starts `cocoon devnet` on `state` (fake-TON) and waits until it is ready."""
    log = open(os.path.join(state, "devnet.log"), "a")
    proc = subprocess.Popen(
        [COCOON, "devnet", "--fake-ton", "--workers", "1", "--upstream", f"http://127.0.0.1:{upstream_port}",
         "--dir", state, "--http-port", str(http_port), "--proxy-client-port", "0",
         "--proxy-worker-port", "0", "--chain-api-port", "0", "--key-manager-port", "0"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    for line in proc.stdout:
        if line.startswith("cocoon devnet is ready"):
            return proc
    raise RuntimeError(f"cocoon devnet exited with {proc.wait()}; see {state}/devnet.log")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def keys(state, *args):
    out = subprocess.run([COCOON, "client", "keys", *args, "--dir", state],
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


@pytest.fixture()
def network():
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, os.path.join(HERE, "mock_upstream.py"), str(upstream_port), MODEL])
    state = tempfile.mkdtemp(prefix="cocoon-keys-devnet-")
    http_port = free_port()
    procs = [start(state, upstream_port, http_port)]

    def restart():
        stop(procs[-1])
        procs.append(start(state, upstream_port, http_port))

    try:
        yield state, f"http://127.0.0.1:{http_port}/v1", restart
    finally:
        stop(procs[-1])
        upstream.terminate()
        upstream.wait(timeout=10)


def ask(api, key):
    client = openai.OpenAI(base_url=api, api_key=key, max_retries=0)
    return client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "Hi"}])


def eventually(check):
    def holds():
        try:
            check()
            return True
        except (AssertionError, openai.APIError, pytest.fail.Exception):
            return False
    wait_for(holds, 5, "the gateway to read its key file")


def test_keys_with_the_official_sdk(network):
    state, api, restart = network
    # No key yet: the devnet's gateway is open (on loopback), as it always was.
    assert ask(api, "unused").choices[0].message.content

    app = keys(state, "add", "--name", "app")
    tight = keys(state, "add", "--name", "tight", "--limit-ton", "0.0000005")   # 500 nanoTON
    slow = keys(state, "add", "--name", "slow", "--rpm", "2")
    assert app.startswith("sk-cocoon-") and len({app, tight, slow}) == 3

    def refused_without_a_key():
        with pytest.raises(openai.AuthenticationError):
            ask(api, "sk-cocoon-unknown")
    eventually(refused_without_a_key)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=api, api_key="unused", max_retries=0).models.list()

    r = ask(api, app)
    assert r.usage.model_extra["total_cost"] == 268          # 134 tokens × 2 nanoTON
    assert [m.id for m in openai.OpenAI(base_url=api, api_key=app).models.list()] == [MODEL]

    ask(api, tight)
    ask(api, tight)                                          # 536 ≥ 500 nanoTON now
    with pytest.raises(openai.APIStatusError) as over:
        ask(api, tight)
    assert over.value.status_code == 402 and over.value.code == "key_limit_reached"

    ask(api, slow)
    ask(api, slow)
    with pytest.raises(openai.RateLimitError) as limited:
        ask(api, slow)
    assert int(limited.value.response.headers["retry-after"]) >= 1

    listed = keys(state, "list")
    assert "app" in listed and "spent 0.000000268 TON in 1 requests" in listed
    assert "tight" in listed and "spent 0.000000536 TON in 2 requests" in listed

    keys(state, "revoke", "--name", "app")

    def app_revoked():
        with pytest.raises(openai.AuthenticationError, match="revoked"):
            ask(api, app)
    eventually(app_revoked)

    # A restart keeps every key, its state and its spending.
    restart()
    with pytest.raises(openai.AuthenticationError, match="revoked"):
        ask(api, app)
    with pytest.raises(openai.APIStatusError) as still_over:
        ask(api, tight)
    assert still_over.value.status_code == 402
    assert ask(api, slow).choices[0].message.content
    assert "spent 0.000000536 TON in 2 requests" in keys(state, "list")
