"""What an emulated call heard and how it went: `Heard`, `CallResult`, `as_dict`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ivr.emulator.streams import MediaStream


@dataclass
class Heard:
    """One thing that happened on the call, in order, from the caller's side."""

    kind: str  # say, play, keys, silence, speak, record, dial, enqueue, queue, hangup, error
    text: str
    language: str = ""


@dataclass
class CallResult:
    """How the call went."""

    call_sid: str
    heard: list[Heard] = field(default_factory=list)
    ended: bool = False
    connected_to: str | None = None
    queue: str | None = None
    statuses: list[int] = field(default_factory=list)
    latencies: list[tuple[str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    recordings: list[str] = field(default_factory=list)
    documents: int = 0  # TwiML documents checked and executed
    streams: list[MediaStream] = field(default_factory=list)  # <Start><Stream>s, in order
    stream_errors: list[str] = field(default_factory=list)  # streams that could not start
    redirects: list[str] = field(default_factory=list)  # REST call updates applied
    bridged: bool = False  # dequeued by an operator's <Dial><Queue> (the REST stand-in)

    @property
    def transcript(self) -> str:
        """Everything said to the caller, one line per <Say>."""
        return "\n".join(item.text for item in self.heard if item.kind == "say")

    @property
    def end(self) -> str:
        """Where the call ended: connected, queued, hung_up (by the IVR or the caller), live."""
        if not self.ended:
            if self.queue:
                return "queued"  # waiting in the queue (or put back there)
            return "connected" if self.connected_to else "live"
        if self.errors:
            return "error"
        if self.connected_to and (self.bridged or not self.queue):
            return "connected"
        if self.queue:
            return "queued"
        return "hung_up"


def as_dict(result: CallResult) -> dict[str, Any]:
    """A JSON-ready summary of a call."""
    return {
        "call_sid": result.call_sid,
        "end": result.end,
        "connected_to": result.connected_to,
        "queue": result.queue,
        "errors": result.errors,
        "heard": [item.__dict__ for item in result.heard],
    }
