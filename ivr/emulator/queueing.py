"""A caller in a queue: <Enqueue>, the waitUrl, being bridged to an operator, REST updates.

`QueuedCaller` is the part of `EmulatedCall` (ivr/emulator/caller.py) that plays the
<Enqueue> page: the caller waits hearing the waitUrl's TwiML, requested again each time it
has played, until <Leave>, a hang-up, an operator's <Dial><Queue> (`dequeue`: a `Bridge`
until either side leaves, then the <Enqueue> action gets QueueResult=bridged) or a REST
update with a new Url (`_redirected`). It runs on the call's own lock and condition
(`self._changed`): the REST stand-in's threads call `dequeue`, `bridge_over` and
`_redirected` while the scenario's thread waits in `wait_for_operator`.
"""

from __future__ import annotations

import threading
import time
import xml.etree.ElementTree as ElementTree

from ivr.emulator.http import new_sid
from ivr.emulator.results import Heard
from ivr.emulator.twiml_rules import WAIT_URL_VERBS, WHISPER_VERBS, TwimlRefused, check

HOLD_ROUND_MINIMUM = 0.05  # seconds between waitUrl requests when its TwiML has no <Pause>


class Bridge:
    """A queued caller connected to an operator's leg, until either side leaves."""

    def __init__(self, queue_sid: str, queue_time: int, dequeuing_sid: str, endpoint: str):
        self.queue_sid = queue_sid
        self.queue_time = queue_time  # seconds in the queue before the bridge
        self.dequeuing_sid = dequeuing_sid
        self.endpoint = endpoint
        self.started = time.monotonic()
        self.ended_by = ""
        self._over = threading.Event()
        self._lock = threading.Lock()

    def end(self, by: str) -> bool:
        """End the talk (by "caller", "operator", "redirect"); False if it had already ended."""
        with self._lock:
            if self._over.is_set():
                return False
            self.ended_by = by
            self._over.set()
            return True

    def wait(self, timeout: float | None) -> bool:
        """Wait until the talk is over; True when it is."""
        return self._over.wait(timeout)

    @property
    def over(self) -> bool:
        """Whether either side has left."""
        return self._over.is_set()

    @property
    def seconds(self) -> int:
        """How long the parties talked (so far)."""
        return round(time.monotonic() - self.started)


class QueuedCaller:
    """Waiting in a queue and talking through a bridge: a mixin of `EmulatedCall`.

    It uses the call's `result`, `twilio`, `post`, `_fetch`, `_run`, `_say`, `hang_up`, its
    pending REST updates (`_redirects`, `_follow_redirect`), `_waiting`, `_pending` and its
    queue and bridge fields (`_queued`, `_queued_at`, `_queue_sid`, `_bridge`,
    `_bridged_enqueue`, `_next_hold_round`), all under `self._changed`.
    """

    def _enqueue(self, verb: ElementTree.Element) -> None:
        queue = (verb.text or "").strip()
        self.result.queue = queue
        self.result.heard.append(Heard("enqueue", queue))
        self._queued, self._queued_at = verb, time.monotonic()
        if self.twilio is not None:
            self._queue_sid = self.twilio.queues.join(queue, self)
        else:
            self._queue_sid = new_sid("QU")
        self._play_wait_url(verb)

    def _play_wait_url(self, verb: ElementTree.Element) -> float:
        """Request the waitUrl and play its TwiML to the waiting caller; returns how long
        that TwiML plays (its <Pause>s), after which Twilio requests the waitUrl again."""
        wait_url = verb.get("waitUrl")
        if not wait_url:
            self._next_hold_round = float("inf")  # Twilio's hold music, never requested
            return 0.0
        queue_time = str(round(time.monotonic() - self._queued_at))
        position, size = 1, 1
        if self.twilio is not None:
            position, size = self.twilio.queues.position(self)
        status_code, body, _ = self.post(
            wait_url,
            {
                "QueuePosition": str(position),
                "QueueSid": self._queue_sid,
                "QueueTime": queue_time,
                "AvgQueueTime": queue_time,
                "CurrentQueueSize": str(size),
                "MaxQueueSize": "100",
            },
        )
        if status_code != 200:
            self.result.errors.append(f"HTTP {status_code} from the queue wait URL")
            return 1.0
        try:
            document = check(body, allowed_verbs=WAIT_URL_VERBS)
        except TwimlRefused as refused:
            self.result.errors.append(f"{refused} from the queue wait URL")
            return 1.0
        # A <Gather> waits its timeout for keys before the document goes on (the <Gather> page).
        length = sum(
            float(
                item.get(
                    "length" if item.tag == "Pause" else "timeout",
                    "1" if item.tag == "Pause" else "5",
                )
            )
            for item in document
            if item.tag in ("Pause", "Gather")
        )
        self._next_hold_round = time.monotonic() + max(HOLD_ROUND_MINIMUM, length * self.time_scale)
        for item in document:
            if self._queued is not verb:
                break  # dequeued meanwhile
            if item.tag == "Say":
                self.result.heard.append(Heard("queue", (item.text or "").strip()))
            elif item.tag == "Gather":
                # Keys typed on hold go to the <Gather>'s action (press()); its TwiML may <Leave>.
                for child in item:
                    if child.tag == "Say":
                        self.result.heard.append(Heard("queue", (child.text or "").strip()))
                self._waiting = item
                break
            elif item.tag == "Leave":
                self._leave_queue("leave")
                break
            elif item.tag == "Hangup":
                self.hang_up()
                break
        return length

    def wait_for_operator(self, timeout: float) -> bool:
        """Stay on hold until something takes the caller out of the queue and, when an
        operator's leg bridged them, until the talk is over and the <Enqueue> action has
        run; or until `timeout` seconds pass. The waitUrl is requested again each time its
        TwiML has played (its <Pause>s, times `time_scale`). True when bridged."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not self.result.ended:
                if self._queued is None and self._bridge is None:
                    break
                if self._redirects:  # a REST update that came while the wait URL played
                    self._follow_redirect()
                    continue
                now = time.monotonic()
                if now >= deadline:
                    break
                if self._queued is not None and now >= self._next_hold_round:
                    self._play_wait_url(self._queued)
                    continue
                wake = deadline if self._queued is None else min(deadline, self._next_hold_round)
                self._changed.wait(max(0.01, wake - now))
        return self.result.bridged

    # Twilio's side: the REST stand-in acts on the call ------------------------------------

    def dequeue(self, dequeuing_sid: str, endpoint: str, whisper_url: str = "") -> Bridge | None:
        """An operator's <Dial><Queue> takes the caller (None if they are no longer waiting).

        The <Queue url> TwiML, if any, is played to the caller before the parties are
        connected (the <Queue> page: Play, Say, Pause, Redirect).
        """
        with self._changed:
            if self._queued is None or self.result.ended or self._bridge is not None:
                return None
            verb, self._queued = self._queued, None
            bridge = Bridge(
                self._queue_sid, round(time.monotonic() - self._queued_at), dequeuing_sid, endpoint
            )
            if whisper_url:
                self._whisper(whisper_url, bridge)
            self._bridge, self._bridged_enqueue = bridge, verb
            self.result.bridged = True
            self.result.connected_to = endpoint
            self.result.heard.append(Heard("bridge", endpoint))
            self._changed.notify_all()
            return bridge

    def _whisper(self, url: str, bridge: Bridge) -> None:
        status_code, body, _ = self.post(
            url,
            {
                "QueueSid": bridge.queue_sid,
                "QueueTime": str(bridge.queue_time),
                "DequeingCallSid": bridge.dequeuing_sid,
            },
        )
        try:
            if status_code != 200:
                raise TwimlRefused(11200, f"HTTP {status_code}")
            document = check(body, allowed_verbs=WHISPER_VERBS)
        except TwimlRefused as refused:
            # Twilio's error 14211 "Dial->Queue: Invalid whisper url"; the parties connect.
            self.result.errors.append(f"{refused} from the <Queue url> whisper")
            return
        for item in document:
            if item.tag == "Say":
                self._say(item)
            elif item.tag == "Play":
                self.result.heard.append(Heard("play", (item.text or "").strip()))

    def bridge_over(self) -> None:
        """The operator's side left the talk: the <Enqueue> action gets QueueResult=bridged
        and its TwiML goes on with the caller (the <Enqueue> page)."""
        with self._changed:
            if self._bridge is not None and not self.result.ended:
                self._end_bridge("operator")
            self._changed.notify_all()

    def _end_bridge(self, by: str, caller_gone: bool = False, result: str = "bridged") -> None:
        bridge, verb = self._bridge, self._bridged_enqueue
        self._bridge = self._bridged_enqueue = None
        bridge.end(by)
        params = {
            "QueueResult": result,
            "QueueSid": bridge.queue_sid,
            "QueueTime": str(bridge.queue_time),
        }
        action = verb.get("action")
        if caller_gone or result == "redirected-from-bridged":
            if action:
                self.post(action, params)  # nobody is left to hear the answer / a new Url runs
            return
        if action:
            self._fetch(action, params)
        else:
            self._run()  # the verbs after <Enqueue>

    def _redirected(self, url: str) -> None:
        """A REST update with a new Url: the call leaves what it was doing and runs that
        URL's TwiML. A queued caller's <Enqueue> action is told QueueResult=redirected
        (redirected-from-bridged when they were talking to an operator)."""
        with self._changed:
            if self.result.ended:
                return
            self._waiting = None
            self._pending = []
            if self._queued is not None:
                verb, self._queued = self._queued, None
                if self.twilio is not None:
                    self.twilio.queues.leave(self)
                if verb.get("action"):
                    self.post(
                        verb.get("action"),
                        {
                            "QueueResult": "redirected",
                            "QueueSid": self._queue_sid,
                            "QueueTime": str(round(time.monotonic() - self._queued_at)),
                        },
                    )
            elif self._bridge is not None:
                self._end_bridge("redirect", result="redirected-from-bridged")
            self._fetch(url)
            self._changed.notify_all()

    @property
    def status(self) -> str:
        """The call's CallStatus as Twilio's Calls resource would show it."""
        return "completed" if self.result.ended else "in-progress"

    @property
    def duration(self) -> int | None:
        """Seconds from answer to hang-up, once the call has ended."""
        return self._duration

    def _leave_queue(self, result: str, caller_gone: bool = False) -> None:
        """The caller is out of the queue: the <Enqueue> action gets the QueueResult."""
        verb, self._queued = self._queued, None
        if self.twilio is not None:
            self.twilio.queues.leave(self)
        params = {
            "QueueResult": result,
            "QueueSid": self._queue_sid,
            "QueueTime": str(round(time.monotonic() - self._queued_at)),
        }
        if caller_gone:
            if verb.get("action"):
                self.post(verb.get("action"), params)  # nobody is left to hear the answer
            return
        if verb.get("action"):
            self._fetch(verb.get("action"), params)
        else:
            self._run()  # the verbs after <Enqueue>
