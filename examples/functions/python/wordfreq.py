#!/usr/bin/env python3
"""wordfreq: a Stratus function in plain Python (standard library only).

A drop-in replacement for the built-in `wc-map`: it follows the Knative
runtime contract (an HTTP server on $PORT) and answers any request with the
word counts of its body as a JSON object word -> count, keys sorted.

Input (the request body):
  - a JSON string, e.g. one element of `split`'s output: "some text";
  - a JSON array of strings (all are counted);
  - anything else is UTF-8 text, counted as is.
Words are maximal runs of alphanumeric characters, lowercased (str.isalnum
and str.lower: the same result as the Rust function for ordinary text).

GET /stats answers {"inflight":n,"max_inflight":m,"requests":k,"pid":p,...}
like the built-in functions. Bad input gets a 400 with a plain-text message.

Run: PORT=8080 python3 examples/functions/python/wordfreq.py
"""

import json
import os
import signal
import sys
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def count_words(text, counts):
    """Adds the lowercased alphanumeric words of `text` to `counts`."""
    word = []
    for ch in text:
        if ch.isalnum():
            word.append(ch)
        elif word:
            counts["".join(word).lower()] += 1
            word.clear()
    if word:
        counts["".join(word).lower()] += 1


def wordfreq(body):
    """Request body (bytes) -> response body (bytes). Raises ValueError on bad input."""
    counts = Counter()
    stripped = body.lstrip()
    texts = None
    if stripped[:1] in (b'"', b"["):
        try:
            value = json.loads(body)
        except ValueError:
            value = None  # not JSON after all: raw text
        if isinstance(value, str):
            texts = [value]
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            texts = value
    if texts is None:
        try:
            texts = [body.decode("utf-8")]
        except UnicodeDecodeError as e:
            raise ValueError(f"body is neither a JSON string nor UTF-8 text: {e}") from None
    for t in texts:
        count_words(t, counts)
    return json.dumps(dict(sorted(counts.items())), ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.requests = 0

    def enter(self):
        with self.lock:
            self.requests += 1
            self.inflight += 1
            self.max_inflight = max(self.max_inflight, self.inflight)

    def leave(self):
        with self.lock:
            self.inflight -= 1

    def json(self):
        with self.lock:
            return json.dumps({
                "inflight": self.inflight,
                "max_inflight": self.max_inflight,
                "requests": self.requests,
                "pid": os.getpid(),
                "function": "wordfreq",
            }).encode()


STATS = Stats()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
    disable_nagle_algorithm = True
    server_version = "wordfreq"
    sys_version = ""

    def log_message(self, format, *args):  # no per-request logging
        pass

    def read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def reply(self, status, content_type, body):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        try:
            body = self.read_body()
        except ValueError as e:
            self.close_connection = True
            self.reply(400, "text/plain; charset=utf-8", f"cannot read the request body: {e}\n".encode())
            return
        if self.command == "GET" and self.path.split("?", 1)[0] == "/stats":
            self.reply(200, "application/json", STATS.json())
            return
        STATS.enter()
        try:
            try:
                out = wordfreq(body)
            except ValueError as e:
                self.reply(400, "text/plain; charset=utf-8", f"{e}\n".encode())
                return
            self.reply(200, "application/json", out)
        finally:
            STATS.leave()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 1024


def main():
    port = int(os.environ.get("PORT", "8080"))
    host = os.environ.get("HOST", "127.0.0.1")
    server = Server((host, port), Handler)

    def stop(*_):
        # shutdown() waits for serve_forever to return: call it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
