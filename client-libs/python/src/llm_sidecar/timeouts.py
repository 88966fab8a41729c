"""Time limits of calls and streams: `Timeout` and the deadline bookkeeping both clients share.

A limit that expires cancels the call on the daemon (`$/cancel`) and raises `CallTimeout`.
"""

import math
import time
from dataclasses import dataclass
from typing import Literal, Optional, Union

from .errors import CallTimeout

Limit = Literal["total", "first_chunk", "chunk"]


@dataclass(frozen=True)
class Timeout:
    """Time limits in seconds (None: no limit).

    - `total`: the whole call, from sending the request to its answer (for a stream: to the end
      of the stream, however fast chunks come);
    - `first_chunk`: from sending the request to its first stream chunk (or its answer);
    - `chunk`: the longest wait between two chunks of a stream (and from the last chunk to the
      answer).

    `first_chunk` and `chunk` only concern streams. A plain number where a timeout is accepted
    means `Timeout(total=number)`.
    """

    total: Optional[float] = None
    first_chunk: Optional[float] = None
    chunk: Optional[float] = None

    def __post_init__(self) -> None:
        for name in ("total", "first_chunk", "chunk"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool) or not value > 0):
                raise ValueError(f"Timeout.{name} must be a positive number of seconds or None, not {value!r}")


#: What `timeout=` accepts: seconds for the whole call, a `Timeout`, or None (no limit).
TimeoutLike = Union[None, float, Timeout]


def as_timeout(value: TimeoutLike) -> Timeout:
    if value is None:
        return Timeout()
    if isinstance(value, Timeout):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return Timeout(total=float(value))
    raise TypeError(f"timeout must be seconds, a Timeout or None, not {type(value).__name__}")


def pick(call_value: TimeoutLike, client_value: TimeoutLike) -> Timeout:
    """The limits of one call: its own `timeout=` when given, else the client's default."""
    return as_timeout(call_value if call_value is not None else client_value)


class Deadline:
    """The clock of one call: how long the next wait may last, and which limit that is."""

    def __init__(self, limits: Timeout, method: str, msgid: int, started: Optional[float] = None):
        self.limits = limits
        self.method = method
        self.msgid = msgid
        self.started = time.monotonic() if started is None else started
        self.end = math.inf if limits.total is None else self.started + limits.total

    def next_wait(self, first: bool) -> "tuple[Optional[float], Limit]":
        """Seconds the next wait may take (None: forever) and the limit it would hit: the
        total deadline, or the first-chunk / between-chunks limit, whichever comes first."""
        gap = self.limits.first_chunk if first else self.limits.chunk
        remaining = None if self.limits.total is None else max(0.0, self.end - time.monotonic())
        if gap is not None and (remaining is None or gap < remaining):
            return gap, ("first_chunk" if first else "chunk")
        return remaining, "total"

    def remaining(self) -> Optional[float]:
        return None if self.limits.total is None else max(0.0, self.end - time.monotonic())

    def expired(self, limit: Limit) -> CallTimeout:
        seconds = {"total": self.limits.total, "first_chunk": self.limits.first_chunk, "chunk": self.limits.chunk}[limit]
        what = {
            "total": "did not finish",
            "first_chunk": "sent no first chunk",
            "chunk": "sent no further chunk",
        }[limit]
        return CallTimeout(
            f"{self.method} (msgid {self.msgid}) {what} within {seconds} s; it was cancelled",
            {"method": self.method, "msgid": self.msgid, "limit": limit, "seconds": seconds},
        )
