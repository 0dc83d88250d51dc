"""
The emulator's knobs for misbehaving on purpose, and its counters.

Every knob is off by default and can be changed while the emulator runs
(``emulator.faults.server_error_rate = 0.2``). Random choices come from one
seeded generator, so a run with the same seed and the same requests misbehaves
the same way.
"""

from __future__ import annotations

import random
from collections import Counter

import attrs


@attrs.define
class Faults:
    """
    How the emulator misbehaves. Rates are fractions of requests, 0.0 to 1.0.

    Attributes:
        latency: Seconds added to every answer.
        latency_jitter: Up to this many more seconds, drawn per request.
        page_cap: Serve at most this many records a page, whatever ``limit`` asks.
        throttle_rate: Requests a second the token bucket allows (None: no bucket).
        throttle_burst: The bucket's size.
        throttled_rate: Fraction answered 429 regardless of the bucket.
        concurrency_limit: Requests in flight the gateway allows; the ones
            above it are answered 429 at once (None: no limit).
        retry_after: The ``Retry-After`` header a 429 carries (None: no header).
        server_error_rate: Fraction answered 502, 503 or 504.
        drop_rate: Fraction whose connection is closed before any answer.
        truncate_rate: Fraction whose body is cut short (the connection closes
            before ``Content-Length`` bytes were sent).
        bad_body_rate: Fraction answered 200 with an HTML body.
        creates_per_request: Jobs created in the project before each answer.
        deletes_per_request: Jobs deleted from the project before each answer.
    """

    latency: float = 0.0
    latency_jitter: float = 0.0
    page_cap: int | None = None
    throttle_rate: float | None = None
    throttle_burst: int = 1
    throttled_rate: float = 0.0
    concurrency_limit: int | None = None
    retry_after: str | None = "1"
    server_error_rate: float = 0.0
    drop_rate: float = 0.0
    truncate_rate: float = 0.0
    bad_body_rate: float = 0.0
    creates_per_request: int = 0
    deletes_per_request: int = 0


@attrs.define
class Stats:
    """What the emulator served, for tests and benchmarks to assert on."""

    requests: int = 0
    in_flight: int = 0
    max_in_flight: int = 0
    max_in_flight_served: int = 0  # in flight when a request got past throttling
    statuses: Counter[int] = attrs.field(factory=Counter)
    faults: Counter[str] = attrs.field(factory=Counter)
    requests_by_project: Counter[str] = attrs.field(factory=Counter)
    # by the API call asked for: "list" (ListBatchJobs), "show" (ShowBatchJob)
    requests_by_call: Counter[str] = attrs.field(factory=Counter)
    tokens_issued: int = 0  # by the IAM token call


class TokenBucket:
    """A token bucket on the loop's clock: *rate* tokens a second, *burst* at most."""

    __slots__ = ("_burst", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self._rate = rate
        self._burst = max(burst, 1)
        self._tokens = float(self._burst)
        self._last = now

    def take(self, now: float) -> bool:
        """Take one token if there is one."""
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False


def roll(rng: random.Random, rate: float) -> bool:
    """Whether a fault of this *rate* strikes this request."""
    return rate > 0 and rng.random() < rate
