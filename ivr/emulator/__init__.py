"""Plays Twilio's part: posts signed webhooks with Twilio's parameters and executes the TwiML.

Used by the tests, `ivr call` and `ivr simulate` to drive whole calls offline. `http`
carries the requests (real HTTP to a running server, or a Flask test client); `caller` is
an inbound call's leg (with `queueing`: <Enqueue>, the waitUrl, bridges, REST updates;
`recording`: <Record>; `results`: what the call heard); `rest` is Twilio's REST API (with
`legs`: calls placed to operators' and customers' phones, bridges with queued callers;
`phones`: how each number answers; `queue_registry`: the queues; and messages); `media`
serves recordings over real HTTP on loopback as Twilio's media host does; `twiml_rules` is
what TwiML Twilio accepts, checked on every document.
The stand-in does only what Twilio's documentation says Twilio does, and never makes up a
result the service did not cause.
"""

from ivr.emulator.caller import EmulatedCall
from ivr.emulator.http import API_VERSION, FlaskTransport, HttpTransport, Transport, new_sid, sign
from ivr.emulator.media import MediaServer, Recording, audio_duration, transcode
from ivr.emulator.rest import Phone, QueueRegistry, TwilioStandIn
from ivr.emulator.results import CallResult, Heard, as_dict
from ivr.emulator.streams import EmulatedRest, MediaStream, mulaw_audio
from ivr.emulator.twiml_rules import TwimlRefused, check, parse

parse_twiml = parse

__all__ = [
    "API_VERSION",
    "CallResult",
    "EmulatedCall",
    "EmulatedRest",
    "MediaStream",
    "mulaw_audio",
    "FlaskTransport",
    "Heard",
    "HttpTransport",
    "MediaServer",
    "Phone",
    "QueueRegistry",
    "Recording",
    "Transport",
    "TwilioStandIn",
    "TwimlRefused",
    "as_dict",
    "audio_duration",
    "check",
    "new_sid",
    "parse",
    "parse_twiml",
    "sign",
    "transcode",
]
