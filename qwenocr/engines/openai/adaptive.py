"""How many requests each server is sent at once: an adaptive limit per server (AIMD).

`--concurrency N` is what the user allows; it is not what every server takes.
llama-cpp-python's server (by default) cuts the answer it is streaming as soon as the
next request arrives, a busy vLLM or a proxy answers 429/503, and a server that only
queues gets slow. Sending a fixed N there loses pages or wastes retries, so each server
gets its own limit, between 1 and N:

- multiplicative decrease: when an answer is interrupted the server served one request
  at a time, so its limit drops to 1; a rejection (429, 503) or a request timing out
  halves it (the requests in flight then, rounded up). Only with more than one request
  in flight: alone, the trouble is not our parallelism. One congestion event lowers the
  limit once: failures of requests sent before the last decrease (an older `epoch`)
  don't lower it again.
- additive increase: after a streak of clean answers (`patience`) the limit goes up by
  one, back towards N. A raise the server can't take costs a retry, so every decrease
  after the first doubles the streak needed before the next raise (up to a cap): a
  server that never copes with more is probed less and less often.

The limit is a counting gate: `ServerClient` takes a slot before each request and
gives it back after, waiting while every server is at its limit (the pipeline keeps
`concurrency` pages going; the ones over the limit wait here, not at the server).
"""

from __future__ import annotations

from typing import Optional

# Clean answers in a row before the limit is raised by one, and the most that streak
# is doubled to after raises the server could not take.
RAISE_AFTER = 8
RAISE_AFTER_MAX = 256

# What a congestion signal says about the server (see `Retryable.kind` in client.py).
INTERRUPTED = "interrupted"  # the answer was cut when another request arrived
REJECTED = "rejected"  # 429 or 503: too busy now
SLOW = "slow"  # no complete answer in time
CONGESTION = (INTERRUPTED, REJECTED, SLOW)


class AdaptiveLimit:
    """The requests one server is sent at once. Thread-safe only under its owner's lock
    (`ServerClient` holds one lock for all servers, so that picking a server with a free
    slot and taking the slot are one step)."""

    def __init__(self, ceiling: int, raise_after: int = RAISE_AFTER):
        self.ceiling = max(1, int(ceiling))
        self.limit = self.ceiling
        self.in_flight = 0
        self.epoch = 0  # bumped by every decrease
        self.clean = 0  # clean answers since the last change
        self.patience = max(1, int(raise_after))
        self.decreases = 0
        self.lowest = self.ceiling

    def free(self) -> bool:
        return self.in_flight < self.limit

    def take(self) -> "Slot":
        self.in_flight += 1
        return Slot(self.in_flight, self.epoch)

    def give_back(self) -> None:
        self.in_flight = max(0, self.in_flight - 1)

    def succeeded(self, slot: "Slot") -> bool:
        """A clean answer; True when it raised the limit."""
        self.clean += 1
        if self.limit < self.ceiling and self.clean >= self.patience:
            self.limit += 1
            self.clean = 0
            return True
        return False

    def congested(self, slot: "Slot", kind: str) -> Optional[int]:
        """A congestion signal for a request sent with `slot` while `in_flight` requests
        (itself included) were out; the new limit when this lowered it, else None
        (already lowered for this event, or at 1)."""
        self.clean = 0
        if slot.epoch != self.epoch or self.limit <= 1 or self.in_flight <= 1:
            # Lowered already for this event; or alone in flight, when the trouble was
            # not our parallel requests (another client, a slow page).
            return None
        if kind == INTERRUPTED:
            new = 1  # such a server finishes one answer at a time
        else:
            new = max(1, (min(self.limit, self.in_flight) + 1) // 2)  # half, rounded up
        if new >= self.limit:
            return None
        if self.decreases:
            self.patience = min(self.patience * 2, RAISE_AFTER_MAX)
        self.decreases += 1
        self.limit = new
        self.lowest = min(self.lowest, new)
        self.epoch += 1
        return new


class Slot:
    """One request's place under a server's limit: how many requests were in flight to
    the server when it was taken (`level`, itself included) and the limit's `epoch`."""

    __slots__ = ("level", "epoch")

    def __init__(self, level: int, epoch: int):
        self.level = level
        self.epoch = epoch
