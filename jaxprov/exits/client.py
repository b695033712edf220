"""A black-box suspect over HTTP (`--url`): the verifier's client for `jaxprov serve` or any endpoint that
takes POST /predict {"input": [...]} and answers {"label": int}. Standard library only (urllib).

The time of a query runs from sending the request to having read the full response (the body
encoded beforehand). A failed attempt (connection refused or reset, a timeout, a 5xx) is retried
after a growing pause and its time thrown away; a 4xx is the endpoint refusing this input and
fails at once with its one-line reason.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.error
import urllib.request

import numpy as np

from jaxprov.errors import JaxprovError

MAX_RESPONSE = 1 << 16  # a label answer is a few bytes; never read an unbounded body


class HttpSuspect:
    """`query(x) -> (label, seconds)` against `url`/predict."""

    def __init__(self, url: str, timeout: float = 10.0, retries: int = 3, backoff: float = 0.2):
        if not url.startswith(("http://", "https://")):
            raise JaxprovError(f"--url {url!r} must start with http:// or https://")
        self.url = url.rstrip("/")
        self.timeout, self.retries, self.backoff = float(timeout), int(retries), float(backoff)

    def query(self, x) -> tuple[int, float]:
        body = json.dumps({"input": np.asarray(x, np.float32).tolist()}).encode()
        request = urllib.request.Request(self.url + "/predict", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        last = None
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            try:
                start = time.perf_counter()
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read(MAX_RESPONSE + 1)
                elapsed = time.perf_counter() - start
            except urllib.error.HTTPError as err:
                if err.code < 500:
                    raise JaxprovError(f"{self.url} refused the query (HTTP {err.code}): {_reason(err)}") from None
                last = f"HTTP {err.code}"
                continue
            except (urllib.error.URLError, ConnectionError, socket.timeout, TimeoutError) as err:
                last = str(getattr(err, "reason", err))
                continue
            return _label(payload, self.url), elapsed
        raise JaxprovError(f"could not query {self.url} ({self.retries + 1} attempts, last: {last}); is the "
                           "server (e.g. `jaxprov serve MODEL --port N`) running?")


def _reason(err: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(err.read(MAX_RESPONSE))["error"])
    except Exception:  # noqa: BLE001 - any unreadable error body
        return err.reason or "no reason given"


def _label(payload: bytes, url: str) -> int:
    try:
        if len(payload) > MAX_RESPONSE:
            raise ValueError
        label = json.loads(payload)["label"]
        if isinstance(label, bool) or not isinstance(label, int):
            raise ValueError
        return label
    except (ValueError, KeyError, TypeError):
        raise JaxprovError(f"{url} answered something other than {{\"label\": int}}; is it a jaxprov serve "
                           "endpoint?") from None
