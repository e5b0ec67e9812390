"""Turn -> TwiML. The only place TwiML is built."""

from __future__ import annotations

from dataclasses import dataclass, fields

from twilio.twiml.voice_response import Dial, Enqueue, Gather, Start, VoiceResponse

from ivr.flow import Say, Turn
from ivr.prompts import Prompts


@dataclass(frozen=True)
class Links:
    """The URLs a step's TwiML points Twilio at (built by the web layer)."""

    action: str  # where a <Gather> posts, and where a time-out redirects
    dial_action: str = ""
    enqueue_action: str = ""
    wait_url: str = ""
    dial_timeout: int = 25
    record_action: str = ""  # where a <Record> posts, and where an empty recording redirects
    recording_status: str = ""  # Twilio's recordingStatusCallback
    poll: str = ""  # where a waiting caller is redirected to check for a result
    # Stream mode: the Media Streams WebSocket a listening prompt starts, and its parameters.
    stream_url: str = ""
    stream_name: str = ""
    stream_parameters: tuple[tuple[str, str], ...] = ()


def spoken_texts(step: Turn, catalogue: dict[str, Prompts], language: str) -> list[str]:
    """The plain texts the caller hears at this step (for the call timeline)."""
    return [_prompts_for(say, catalogue, language).text(say.key, say.params) for say in step.say]


def _prompts_for(say: Say, catalogue: dict[str, Prompts], language: str) -> Prompts:
    return catalogue[say.language or language]


def _add_says(parent, step: Turn, catalogue: dict[str, Prompts], language: str) -> None:
    for say in step.say:
        prompts = _prompts_for(say, catalogue, language)
        parent.say(
            prompts.text(say.key, say.params),
            voice=prompts.voice.voice,
            language=prompts.voice.language,
        )


# Rendered documents by (prompts, turn, language, links): the same turn recurs constantly
# (every new call on a line hears the same first turn), and building the XML with the
# helper library was a fifth of a new call's cost (tests/bench/bench_webhook_cost.py).
_RENDERED: dict[tuple, str] = {}
_RENDERED_MAX = 4096


def render(step: Turn, catalogue: dict[str, Prompts], language: str, links: Links) -> str:
    """The TwiML document for a step (memoised: the same inputs give the same document)."""
    key = (
        tuple(prompts.fingerprint for prompts in catalogue.values()),
        _turn_key(step),
        language,
        links,
    )
    document = _RENDERED.get(key)
    if document is None:
        document = _render(step, catalogue, language, links)
        if len(_RENDERED) >= _RENDERED_MAX:
            _RENDERED.clear()
        _RENDERED[key] = document
    return document


_TURN_FIELDS = tuple(field.name for field in fields(Turn))


def _turn_key(step: Turn) -> tuple | str:
    """A hashable stand-in for the turn, field by field (its Says' parameters are dicts,
    so the turn itself cannot be hashed); cheaper than its repr."""
    key = tuple(
        tuple((say.key, tuple(say.params.items()), say.language) for say in step.say)
        if name == "say"
        else getattr(step, name)
        for name in _TURN_FIELDS
    )
    try:
        hash(key)
    except TypeError:  # a parameter value that cannot be hashed
        return repr(step)
    return key


def _render(step: Turn, catalogue: dict[str, Prompts], language: str, links: Links) -> str:
    response = VoiceResponse()
    if step.listen and links.stream_url:
        # The <Stream> page: <Start> forks the caller's audio to the WebSocket while the
        # call goes on; the <Gather> below keeps listening for keys at the same time.
        start = Start()
        stream = start.stream(url=links.stream_url, name=links.stream_name)
        for name, value in links.stream_parameters:
            stream.parameter(name=name, value=value)
        response.append(start)
    if step.gather is not None:
        gather = Gather(
            input="dtmf",
            action=links.action,
            method="POST",
            timeout=step.gather.timeout,
            finish_on_key=step.gather.finish_on_key,
            **({"num_digits": step.gather.num_digits} if step.gather.num_digits else {}),
        )
        _add_says(gather, step, catalogue, language)
        response.append(gather)
        # Twilio runs the next verb when the gather times out: come back with no digits.
        response.redirect(links.action, method="POST")
        return str(response)
    _add_says(response, step, catalogue, language)
    if step.record is not None:
        response.record(
            action=links.record_action,
            method="POST",
            max_length=step.record.max_length,
            timeout=step.record.timeout,
            finish_on_key=step.record.finish_on_key,
            play_beep=True,
            trim="trim-silence",
            recording_status_callback=links.recording_status,
            recording_status_callback_method="POST",
            recording_status_callback_event="completed absent",
        )
        # An empty recording (silence, or '#' at once) makes Twilio run the next verb.
        response.redirect(links.record_action, method="POST")
        return str(response)
    if step.end == "poll":
        response.pause(length=1)
        response.redirect(links.poll, method="POST")
        return str(response)
    if step.end == "dial":
        dial = Dial(
            action=links.dial_action,
            method="POST",
            timeout=links.dial_timeout,
        )
        _add_endpoint(dial, step.target or "")
        response.append(dial)
    elif step.end == "enqueue":
        enqueue = Enqueue(
            action=links.enqueue_action,
            method="POST",
            wait_url=links.wait_url,
            wait_url_method="POST",
        )
        enqueue.value = step.target or "support"
        response.append(enqueue)
    elif step.end == "nothing":
        pass  # the call runs other TwiML now (moved by a REST update): an empty document
    else:
        response.hangup()
    return str(response)


def _add_endpoint(dial: Dial, endpoint: str) -> None:
    """Operators are reached by phone number, SIP URI or Twilio Client identity."""
    if endpoint.startswith("sip:"):
        dial.sip(endpoint)
    elif endpoint.startswith("client:"):
        dial.client(endpoint.removeprefix("client:"))
    else:
        dial.number(endpoint)


def _say(parent, prompts: Prompts, key: str, params: dict | None = None) -> None:
    parent.say(
        prompts.text(key, params), voice=prompts.voice.voice, language=prompts.voice.language
    )


def render_queue_wait(
    prompts: Prompts,
    position: int | None,
    minutes: int | None = None,
    offer_action: str = "",
    pause_seconds: int = 30,
) -> str:
    """What a queued caller hears while waiting (Twilio requests the waitUrl again when done).

    The position and the estimated wait; after the longest wait, `offer_action` is where a
    one-key <Gather> offering a callback posts (no key: the document ends, the caller waits
    on). Only the waitUrl's verbs (the <Enqueue> page): Say, Play, Pause, Gather, Leave...
    """
    response = VoiceResponse()
    if position and minutes:
        _say(response, prompts, "queue_wait", {"position": position, "minutes": minutes})
    elif position:
        _say(response, prompts, "queue_wait_unknown", {"position": position})
    if offer_action:
        gather = Gather(input="dtmf", action=offer_action, method="POST", num_digits=1, timeout=10)
        _say(gather, prompts, "queue_callback_offer")
        response.append(gather)
        return str(response)
    response.pause(length=pause_seconds)
    return str(response)


def render_queue_leave(wait_url: str, leave: bool) -> str:
    """The answer to the callback offer: <Leave> on 1 (the <Enqueue> action then gets
    QueueResult=leave), otherwise back to waiting."""
    response = VoiceResponse()
    if leave:
        response.leave()
    else:
        response.redirect(wait_url, method="POST")
    return str(response)


def render_operator_queue(prompts: Prompts, whisper: list[str], queue: str, action: str) -> str:
    """An operator's leg, answered: the ticket whispered, then the caller's own queue."""
    response = VoiceResponse()
    for text in whisper:
        response.say(text, voice=prompts.voice.voice, language=prompts.voice.language)
    dial = Dial(action=action, method="POST")
    dial.queue(queue)
    response.append(dial)
    return str(response)


def render_operator_callback(
    prompts: Prompts, whisper: list[str], customer: str, caller_id: str, action: str, timeout: int
) -> str:
    """An operator's callback leg, answered: the whisper, then the customer from the line."""
    response = VoiceResponse()
    for text in whisper:
        response.say(text, voice=prompts.voice.voice, language=prompts.voice.language)
    dial = Dial(action=action, method="POST", timeout=timeout, caller_id=caller_id)
    _add_endpoint(dial, customer)
    response.append(dial)
    return str(response)


def render_operator_goodbye(prompts: Prompts, key: str | None) -> str:
    """End an operator's leg (with a word of why, if any)."""
    response = VoiceResponse()
    if key:
        _say(response, prompts, key)
    response.hangup()
    return str(response)


def render_apology(prompts: Prompts, queue: str, wait_url: str = "") -> str:
    """Last-resort TwiML when everything else failed: apologise and queue for an operator.

    With `wait_url`, the queue's wait webhook puts the caller on the dispatcher's list
    (nothing of the failed request was written).
    """
    response = VoiceResponse()
    response.say(
        prompts.text("technical_problem"),
        voice=prompts.voice.voice,
        language=prompts.voice.language,
    )
    enqueue = Enqueue(**({"wait_url": wait_url, "wait_url_method": "POST"} if wait_url else {}))
    enqueue.value = queue
    response.append(enqueue)
    return str(response)
