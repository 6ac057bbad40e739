"""Starts a mock model server and `cocoon devnet` for the OpenAI SDK tests."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
MODEL = "mock-model"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise RuntimeError(f"timed out waiting for {what}")


def start_devnet(extra_args, prefix):
    """Starts `cocoon devnet` with `extra_args`; returns (process, devnet.json, state dir)."""
    cocoon = os.environ.get("COCOON_BIN", os.path.join(ROOT, "target", "debug", "cocoon"))
    state = tempfile.mkdtemp(prefix=prefix)
    http_port = free_port()
    log = open(os.path.join(state, "devnet.log"), "w")
    proc = subprocess.Popen(
        [cocoon, "devnet", "--dir", state, "--http-port", str(http_port),
         "--proxy-client-port", "0", "--proxy-worker-port", "0", "--chain-api-port", "0",
         "--key-manager-port", "0"]
        + extra_args,
        stdout=subprocess.PIPE, stderr=log, text=True)
    info_path = os.path.join(state, "devnet.json")
    wait_for(lambda: os.path.exists(info_path) or proc.poll() is not None, 180, "devnet.json")
    if proc.poll() is not None:
        raise RuntimeError(f"cocoon devnet exited with {proc.returncode}; see {state}/devnet.log")
    with open(info_path) as f:
        return proc, json.load(f), state


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture(scope="session")
def engine_devnet():
    """A devnet on the embedded engine with its generated tiny random-weight models: chat,
    and one more worker each for speech (Whisper) and embeddings."""
    proc, info, _ = start_devnet(["--workers", "1", "--speech-model", "tiny", "--embedding-model", "tiny"],
                                 "cocoon-engine-devnet-")
    try:
        yield info
    finally:
        stop(proc)


@pytest.fixture(scope="session")
def devnet():
    cocoon = os.environ.get("COCOON_BIN", os.path.join(ROOT, "target", "debug", "cocoon"))
    upstream_port = free_port()
    upstream = subprocess.Popen([sys.executable, os.path.join(HERE, "mock_upstream.py"), str(upstream_port), MODEL])
    state = tempfile.mkdtemp(prefix="cocoon-devnet-")
    http_port = free_port()
    log = open(os.path.join(state, "devnet.log"), "w")
    proc = subprocess.Popen(
        [cocoon, "devnet", "--upstream", f"http://127.0.0.1:{upstream_port}", "--dir", state,
         "--http-port", str(http_port), "--proxy-client-port", "0", "--proxy-worker-port", "0",
         "--chain-api-port", "0", "--key-manager-port", "0"],
        stdout=subprocess.PIPE, stderr=log, text=True)
    info_path = os.path.join(state, "devnet.json")
    try:
        wait_for(lambda: os.path.exists(info_path) or proc.poll() is not None, 90, "devnet.json")
        if proc.poll() is not None:
            raise RuntimeError(f"cocoon devnet exited with {proc.returncode}; see {state}/devnet.log")
        with open(info_path) as f:
            info = json.load(f)
        yield info
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        upstream.terminate()
        upstream.wait(timeout=10)
