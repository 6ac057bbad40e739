#!/usr/bin/env python3
"""A mock OpenAI-compatible model server for the end-to-end tests (a stand-in for vLLM).

Standard library only. Serves /v1/models, /v1/chat/completions, /v1/completions and
/v1/audio/transcriptions|translations,
plain JSON or Server-Sent Events, always with COCOON's benchmark usage numbers
(prompt 34, cached 11, completion 100, reasoning 10 -> 134 adjusted tokens at 1.0x).
A request may carry {"mock": {"delay_ms": N, "chunks": N, "status": CODE}} to shape it.

Usage: mock_upstream.py PORT [MODEL]
"""
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MODEL = sys.argv[2] if len(sys.argv) > 2 else "mock-model"
USAGE = {
    "prompt_tokens": 34,
    "completion_tokens": 100,
    "total_tokens": 134,
    "prompt_tokens_details": {"cached_tokens": 11},
    "completion_tokens_details": {"reasoning_tokens": 10},
}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # quiet
        pass

    def send_json(self, status, value):
        body = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/v1/models":
            self.send_json(200, {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "mock"}]})
        else:
            self.send_json(404, {"error": {"message": "not found"}})

    def audio(self, body):
        """/v1/audio/*: a transcript naming the file's size; usage as tokens (json) or the
        audio's duration (verbose_json, as Whisper servers give it)."""
        from email import policy
        from email.parser import BytesParser
        head = b"Content-Type: " + self.headers.get("Content-Type", "").encode() + b"\r\n\r\n"
        message = BytesParser(policy=policy.default).parsebytes(head + body)
        fields = {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if name:
                fields[name] = part.get_payload(decode=True) or b""
        if "file" not in fields:
            return self.send_json(400, {"error": {"message": "no file", "type": "invalid_request_error"}})
        text = "heard %d bytes" % len(fields["file"])
        fmt = fields.get("response_format", b"json").decode()
        if fmt == "verbose_json":
            return self.send_json(200, {"task": "transcribe", "language": "english", "duration": 2.5, "text": text,
                                        "segments": [{"id": 0, "start": 0.0, "end": 2.5, "text": text}]})
        return self.send_json(200, {"text": text, "usage": {"type": "tokens", "input_tokens": 40,
                                                          "output_tokens": 6, "total_tokens": 46}})

    def start_sse(self):
        """Starts a chunked `text/event-stream` answer; returns the function that sends one
        event (a JSON value or a raw string such as `[DONE]`)."""
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = ("data: " + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n\n").encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        return send

    def embeddings(self, req):
        """One vector [i, i + 0.5, ...] of `dimensions` (default 8) per input, floats or
        base64 (little-endian f32); 5 prompt tokens per input."""
        import base64
        import struct
        inputs = req.get("input")
        count = len(inputs) if isinstance(inputs, list) and not all(isinstance(i, int) for i in inputs) else 1
        dims = int(req.get("dimensions") or 8)
        data = []
        for i in range(count):
            vector = [i + d * 0.5 for d in range(dims)]
            if req.get("encoding_format") == "base64":
                embedding = base64.b64encode(struct.pack("<%df" % dims, *vector)).decode()
            else:
                embedding = vector
            data.append({"object": "embedding", "index": i, "embedding": embedding})
        usage = {"prompt_tokens": 5 * count, "total_tokens": 5 * count}
        return self.send_json(200, {"object": "list", "model": MODEL, "data": data, "usage": usage})

    def tool_call(self, req):
        """With `tools`: calls the first tool with {"city": "Dubai"} (streamed as deltas when
        asked); after a `tool` message, answers with what the tool said."""
        created = int(time.time())
        messages = req.get("messages") or []
        if messages and messages[-1].get("role") == "tool":
            message = {"role": "assistant", "content": "The tool said: " + str(messages[-1].get("content"))}
            return self.send_json(200, {"id": "chatcmpl-mock", "object": "chat.completion", "created": created,
                                        "model": MODEL, "usage": USAGE,
                                        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})
        name = req["tools"][0]["function"]["name"]
        call = {"id": "call_1", "type": "function", "function": {"name": name, "arguments": '{"city": "Dubai"}'}}
        if not req.get("stream"):
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            return self.send_json(200, {"id": "chatcmpl-mock", "object": "chat.completion", "created": created,
                                        "model": MODEL, "usage": USAGE,
                                        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls"}]})
        send = self.start_sse()

        head = dict(call, index=0, function={"name": name, "arguments": ""})
        deltas = [{"role": "assistant", "tool_calls": [head]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": '{"city": '}}]},
                  {"tool_calls": [{"index": 0, "function": {"arguments": '"Dubai"}'}}]}]
        for i, delta in enumerate(deltas):
            finish = "tool_calls" if i == len(deltas) - 1 else None
            send({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": MODEL,
                  "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
        send({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": MODEL,
              "choices": [], "usage": USAGE})
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()

    def do_POST(self):
        length = int(self.headers.get("Content-Length", "0"))
        if self.path.startswith("/v1/audio/"):
            return self.audio(self.rfile.read(length))
        try:
            req = json.loads(self.rfile.read(length) or b"{}")
        except ValueError:
            return self.send_json(400, {"error": {"message": "bad json", "type": "invalid_request_error"}})
        mock = req.get("mock") or {}
        if "status" in mock:
            return self.send_json(int(mock["status"]), {"error": {"message": "mock failure", "type": "server_error"}})
        delay = float(mock.get("delay_ms", 0)) / 1000.0
        if self.path.startswith("/v1/embeddings"):
            return self.embeddings(req)
        chat = self.path.startswith("/v1/chat/completions")
        if chat and req.get("tools"):
            return self.tool_call(req)
        if not chat and not self.path.startswith("/v1/completions"):
            return self.send_json(404, {"error": {"message": "not found"}})
        created = int(time.time())
        if req.get("stream"):
            send = self.start_sse()

            words = ["Hello", " from", " the", " mock", " model", "!"][: int(mock.get("chunks", 6))]
            for word in words:
                time.sleep(delay)
                if chat:
                    choice = {"index": 0, "delta": {"content": word}, "finish_reason": None}
                    send({"id": "chatcmpl-mock", "object": "chat.completion.chunk", "created": created, "model": MODEL, "choices": [choice]})
                else:
                    choice = {"index": 0, "text": word, "finish_reason": None}
                    send({"id": "cmpl-mock", "object": "text_completion", "created": created, "model": MODEL, "choices": [choice]})
            last = {"id": "chatcmpl-mock" if chat else "cmpl-mock",
                    "object": "chat.completion.chunk" if chat else "text_completion",
                    "created": created, "model": MODEL, "choices": [], "usage": USAGE}
            send(last)
            send("[DONE]")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
            return
        time.sleep(delay)
        if chat:
            body = {"id": "chatcmpl-mock", "object": "chat.completion", "created": created, "model": MODEL,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello from the mock model!"},
                                 "finish_reason": "stop"}],
                    "usage": USAGE}
        else:
            body = {"id": "cmpl-mock", "object": "text_completion", "created": created, "model": MODEL,
                    "choices": [{"index": 0, "text": "Hello from the mock model!", "finish_reason": "stop"}],
                    "usage": USAGE}
        self.send_json(200, body)


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.serve_forever()
