"""Twilio's call queues as the REST stand-in keeps them: who waits in which, front first."""

from __future__ import annotations

import threading
import time

from ivr.emulator.caller import EmulatedCall
from ivr.emulator.http import new_sid


class QueueRegistry:
    """Twilio's call queues: who waits in which, longest-waiting first."""

    def __init__(self):
        self._changed = threading.Condition()
        self._waiting: dict[str, list[EmulatedCall]] = {}
        self.sids: dict[str, str] = {}  # queue name -> QueueSid (a queue is made on demand)

    def join(self, name: str, call: EmulatedCall) -> str:
        """<Enqueue>: the call waits at the back of the queue; returns the QueueSid."""
        with self._changed:
            self._waiting.setdefault(name, []).append(call)
            self._changed.notify_all()
            return self.sids.setdefault(name, new_sid("QU"))

    def leave(self, call: EmulatedCall) -> None:
        """The call is out of its queue (left, hung up, redirected)."""
        with self._changed:
            for members in self._waiting.values():
                if call in members:
                    members.remove(call)

    def position(self, call: EmulatedCall) -> tuple[int, int]:
        """(1-based position, queue size) of a waiting call."""
        with self._changed:
            for members in self._waiting.values():
                if call in members:
                    return members.index(call) + 1, len(members)
        return 1, 1

    def waiting(self, name: str) -> list[EmulatedCall]:
        """The calls waiting in a queue, front first."""
        with self._changed:
            return list(self._waiting.get(name, []))

    def exists(self, name: str) -> bool:
        """Whether anyone ever enqueued into this queue (Twilio makes queues on demand)."""
        with self._changed:
            return name in self.sids

    def take(self, name: str, deadline: float, stop: threading.Event) -> EmulatedCall | None:
        """The front caller of the queue, waiting until one joins, `deadline` or `stop`."""
        with self._changed:
            while True:
                members = self._waiting.get(name)
                if members:
                    return members.pop(0)
                remaining = deadline - time.monotonic()
                if remaining <= 0 or stop.is_set():
                    return None
                self._changed.wait(min(remaining, 0.05))
