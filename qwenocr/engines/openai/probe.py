"""How many requests at once a server really serves, for `doctor --base-url`.

`--concurrency` is only useful up to what the server takes: llama-cpp-python's server
(by default) cuts a streaming answer when the next request arrives, and busy servers
answer 429/503. The probe sends small text-only chat requests (a few tokens each,
streamed, so that a cut answer shows) at 1, 2, 4 and 8 in flight, started together,
and reports the largest level at which every answer completed, uninterrupted and not
rejected. It stops at the first level that fails.

It is bounded in time: all levels together get `PROBE_BUDGET_S` seconds (each request's
time limit is what is left of it); a level that doesn't finish in time counts as failed
and the probe says it was cut short. A server that queues requests (serves them one
after another) passes every level: that is not an error, pages just wait their turn;
the level timings show it.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

from qwenocr.engines.openai.adaptive import INTERRUPTED, REJECTED, SLOW
from qwenocr.engines.openai.client import ERROR_BODY_LIMIT, Budget, Retryable, ServerClient, read_limited
from qwenocr.engines.openai.stream import Progress, read_stream
from qwenocr.errors import BackendError, UsageError

PROBE_LEVELS = (1, 2, 4, 8)
PROBE_BUDGET_S = 6.0
PROBE_MAX_TOKENS = 8
PROBE_PROMPT = "Count from one to ten in words."
_OUTCOMES = {INTERRUPTED: "interrupted", REJECTED: "rejected", SLOW: "timeout"}


def probe_parallel(
    base_url: str,
    model: str,
    api_key: Optional[str] = None,
    levels: Sequence[int] = PROBE_LEVELS,
    budget_s: float = PROBE_BUDGET_S,
) -> Dict[str, Any]:
    """`{"parallel", "tried", "levels", "seconds", "cut_short", "error"}`.

    `parallel`: the largest number of requests in flight at which all answers completed
    (0 when not even one did, then `error` says why); `tried`: the largest level tried;
    `levels`: per level `{"in_flight", "completed", "outcomes", "seconds"}`, where
    outcomes counts "ok", "interrupted", "rejected", "timeout" and "error". Never raises
    for network trouble and never includes the key."""
    result: Dict[str, Any] = {
        "parallel": 0,
        "tried": 0,
        "levels": [],
        "seconds": 0.0,
        "cut_short": False,
        "error": None,
    }
    try:
        client = ServerClient([base_url], api_key=api_key, max_retries=0)
    except UsageError as error:
        result["error"] = error.one_line()
        return result
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": PROBE_PROMPT}],
            "stream": True,
            "max_tokens": PROBE_MAX_TOKENS,
            "temperature": 0,
            "chat_template_kwargs": {"enable_thinking": False},
        }
    ).encode()
    started = time.monotonic()
    deadline = started + budget_s
    for level in levels:
        left = deadline - time.monotonic()
        if left <= 0.2:
            result["cut_short"] = True
            break
        outcomes, seconds, first_error = _one_level(client, body, level, left)
        result["tried"] = level
        result["levels"].append(
            {"in_flight": level, "completed": outcomes.get("ok", 0), "outcomes": outcomes, "seconds": round(seconds, 3)}
        )
        if outcomes.get("ok", 0) != level:
            if outcomes.get("timeout") and time.monotonic() >= deadline - 0.05:
                result["cut_short"] = True
            if result["parallel"] == 0:
                result["error"] = first_error
            break
        result["parallel"] = level
    result["seconds"] = round(time.monotonic() - started, 3)
    return result


def _one_level(client: ServerClient, body: bytes, level: int, timeout: float) -> tuple:
    server = client._pool.servers[0]
    barrier = threading.Barrier(level)
    outcomes: Dict[str, int] = {}
    errors: List[str] = []
    lock = threading.Lock()

    def read(response: http.client.HTTPResponse, budget: Budget) -> Any:
        if response.status != 200:
            error = read_limited(response, ERROR_BODY_LIMIT, "the error", budget, truncate=True)
            client._raise_for_status(server, response.status, response.headers, error)
        return read_stream(response, None, Progress(), budget)

    def one() -> None:
        try:
            barrier.wait(timeout)
            client._exchange(server, "POST", "/chat/completions", body, timeout, read, stream=True)
            outcome = "ok"
        except Retryable as failure:
            outcome = _OUTCOMES.get(failure.kind or "", "error")
            with lock:
                errors.append(client._redact(failure.message))
        except (BackendError, threading.BrokenBarrierError) as failure:
            outcome = "error"
            with lock:
                errors.append(client._redact(getattr(failure, "message", None) or str(failure)))
        with lock:
            outcomes[outcome] = outcomes.get(outcome, 0) + 1

    threads = [threading.Thread(target=one, name=f"qwenocr-probe-{n}", daemon=True) for n in range(level)]
    began = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout + 5)  # each request stops itself at `timeout`
    return outcomes, time.monotonic() - began, (errors[0] if errors else None)
