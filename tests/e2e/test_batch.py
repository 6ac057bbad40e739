"""The official `openai` SDK's Files and Batch APIs against `cocoon devnet --upstream <mock>`."""
import json
import time

import openai
import pytest

from conftest import MODEL

FINAL = {"completed", "failed", "expired", "cancelled"}


@pytest.fixture()
def client(devnet):
    return openai.OpenAI(base_url=devnet["client_api"], api_key="unused", max_retries=0)


def request(i, **body):
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": f"question {i}"}], **body}}


def write(path, lines):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def wait(client, batch_id, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        b = client.batches.retrieve(batch_id)
        if b.status in FINAL:
            return b
        time.sleep(0.2)
    raise AssertionError(f"batch {batch_id} did not end within {timeout} s")


def jsonl(client, file_id):
    if file_id is None:
        return []
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


def test_a_batch_runs_through_the_sdk(client, tmp_path):
    lines = [request(i) for i in range(60)]
    lines[10] = request(10, mock={"status": 400})   # the model server refuses this one
    lines[20] = request(20, model="no-such-model")    # no worker serves this model
    path = write(tmp_path / "input.jsonl", lines)
    with open(path, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == path.stat().st_size
    assert client.files.retrieve(uploaded.id).filename == "input.jsonl"
    assert uploaded.id in [f.id for f in client.files.list()]

    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"job": "sdk-test"})
    assert batch.request_counts.total == 60
    done = wait(client, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (58, 2)
    assert done.metadata == {"job": "sdk-test"}

    out, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    ids = sorted(line["custom_id"] for line in out + errors)
    assert ids == sorted(f"req-{i}" for i in range(60)), "every custom_id exactly once"
    assert all(line["response"]["status_code"] == 200 for line in out)
    assert all(line["response"]["body"]["choices"][0]["message"]["content"] == "Hello from the mock model!"
               for line in out)
    assert {line["custom_id"]: line["response"]["status_code"] for line in errors} == \
        {"req-10": 400, "req-20": 404}
    # Each line costs 134 adjusted tokens × 2 nanoTON; the batch says what it cost in all.
    assert all(line["response"]["body"]["usage"]["total_cost"] == 268 for line in out)
    assert done.model_extra["cost_nanoton"] == 58 * 268
    assert done.to_dict()["usage"]["input_tokens"] == 58 * 34

    assert batch.id in [b.id for b in client.batches.list()]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_a_cancelled_batch_returns_every_line_once(client, tmp_path):
    path = write(tmp_path / "slow.jsonl", [request(i, mock={"delay_ms": 200}) for i in range(40)])
    with open(path, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", extra_body={"concurrency": 2})
    deadline = time.time() + 30
    while client.batches.retrieve(batch.id).request_counts.completed < 2:
        assert time.time() < deadline
        time.sleep(0.05)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = wait(client, batch.id)
    assert done.status == "cancelled"
    assert done.request_counts.completed < 40
    out, errors = jsonl(client, done.output_file_id), jsonl(client, done.error_file_id)
    assert len(out) == done.request_counts.completed
    assert sorted(line["custom_id"] for line in out + errors) == sorted(f"req-{i}" for i in range(40))
    assert all(line["error"]["code"] == "batch_cancelled" for line in errors)


def test_bad_batch_input_gets_a_clear_400(client, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(request(0)) + "\n{not json\n")
    with open(bad, "rb") as f, pytest.raises(openai.BadRequestError, match="line 2: not valid JSON"):
        client.files.create(file=f, purpose="batch")
    dup = write(tmp_path / "dup.jsonl", [request(0), request(0)])
    with open(dup, "rb") as f, pytest.raises(openai.BadRequestError, match="appears more than once"):
        client.files.create(file=f, purpose="batch")
    good = write(tmp_path / "good.jsonl", [request(0)])
    with open(good, "rb") as f:
        uploaded = client.files.create(file=f, purpose="batch")
    with pytest.raises(openai.BadRequestError, match="not one batches can use"):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/moderations", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="every line must use the batch's endpoint"):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    with pytest.raises(openai.BadRequestError, match="is not a file here"):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions",
                              completion_window="24h")
