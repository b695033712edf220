"""`jaxprov serve`: an early-exit model answering over HTTP on localhost, standard library only.

One request at a time (`http.server.HTTPServer`, not the threading variant), so the response time
of a request is the time of its own inference plus the transport, as a deployed model's would be.

  POST /predict   body {"input": nested list shaped like the input spec}   -> {"label": int}
  GET  /info      -> {"input_shape": [...], "dtype": "float32", "classes": int}

Every request is untrusted: a body without a Content-Length, longer than the input can need
(`max_body`), not JSON, of the wrong shape or with non-finite values gets a 4xx and one line
{"error": ...}; nothing of it reaches the model. Answers carry only the label: the exit taken is
what a verifier must read from the time.
"""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import numpy as np

from jaxprov.exits.staged import EarlyExit

# JSON of one float takes at most ~25 bytes ("-1.2345678901234567e-308, "); twice that is slack.
BYTES_PER_VALUE = 50
MIN_BODY = 4096


class _Handler(BaseHTTPRequestHandler):
    early: EarlyExit  # set on the subclass `serve` makes
    max_body: int
    info: dict
    delay: object  # None, or a callable: seconds -> extra seconds to wait (simulated slower machine)

    def log_message(self, format, *args):  # noqa: A002 - the stdlib's name; quiet by default
        pass

    def do_GET(self):
        if self.path.rstrip("/") != "/info":
            return self._reply(404, {"error": f"no such endpoint {self.path!r}; use POST /predict or GET /info"})
        self._reply(200, self.info)

    def do_POST(self):
        if self.path.rstrip("/") != "/predict":
            return self._reply(404, {"error": f"no such endpoint {self.path!r}; use POST /predict"})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return self._reply(411, {"error": "a request needs a Content-Length header"})
        if int(length) > self.max_body:
            return self._reply(413, {"error": f"request body of {length} bytes is larger than the {self.max_body} "
                                              "an input of this model can take"})
        try:
            x = _parse_input(self.rfile.read(int(length)), self.early.model.input_spec.shape)
        except ValueError as err:
            return self._reply(400, {"error": str(err)})
        answer = self.early(x)
        if self.delay is not None:
            self.delay(answer.latency_s)
        self._reply(200, {"label": answer.label})

    def _reply(self, status: int, payload: dict):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def _parse_input(body: bytes, shape: tuple[int, ...]) -> np.ndarray:
    try:
        data = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ValueError("the body is not JSON; send {\"input\": [...]}") from None
    if not isinstance(data, dict) or "input" not in data:
        raise ValueError("send a JSON object {\"input\": [...]}")
    try:
        x = np.asarray(data["input"], np.float32)
    except (ValueError, TypeError):
        raise ValueError(f"'input' must be a nested list of numbers shaped {list(shape)}") from None
    if x.shape not in (tuple(shape), (1, *shape)):
        raise ValueError(f"'input' has shape {list(x.shape)}; this model takes {list(shape)}")
    if not np.all(np.isfinite(x)):
        raise ValueError("'input' holds NaN or infinite values")
    return x


def make_server(early: EarlyExit, port: int = 0, host: str = "127.0.0.1", delay=None) -> HTTPServer:
    """An HTTP server for `early` bound to host:port (port 0: any free port, see `server_port`).

    Args:
      delay: None, or a callable given each answer's compute time that sleeps to simulate a slower
        machine (benchmarks: a constant slowdown and jitter).
    """
    early.warm_up()
    spec = early.model.input_spec
    size = math.prod(spec.shape)
    classes = int(early.model.apply(early.model.params, spec.example(1)).shape[-1])
    info = {"input_shape": list(spec.shape), "dtype": "float32", "classes": classes}
    handler = type("Handler", (_Handler,), {"early": early, "max_body": max(MIN_BODY, BYTES_PER_VALUE * size),
                                            "info": info,
                                            "delay": staticmethod(delay) if delay else None})
    return HTTPServer((host, port), handler)


def serve_in_thread(early: EarlyExit, port: int = 0, host: str = "127.0.0.1", delay=None) -> HTTPServer:
    """`make_server` running in a daemon thread; stop it with `server.shutdown(); server.server_close()`."""
    server = make_server(early, port, host, delay)
    threading.Thread(target=server.serve_forever, name="jaxprov-serve", daemon=True).start()
    return server


def url_of(server: HTTPServer) -> str:
    host, port = server.server_address[:2]
    return f"http://{host}:{port}"
