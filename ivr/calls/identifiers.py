"""Names a call's parts go by, and the number checks every webhook shares.

A caller's own Twilio queue, the RecordingSid of an utterance streamed at (call, seq), a
phone number normalised for comparison, a field of plain ASCII digits. No database here.
"""

from __future__ import annotations

import hashlib
import re


def queue_name(call_sid: str) -> str:
    """The caller's own Twilio queue (friendly names may have 64 characters)."""
    return f"call-{call_sid}"


def stream_recording_sid(call_sid: str, seq: int) -> str:
    """The recording (and recognition) name of the utterance streamed at (call, seq).

    Twilio-shaped ("RE" and 32 hex digits, a RecordingSid), derived, so the media socket
    and the webhooks agree on it without sharing memory.
    """
    return "RE" + hashlib.sha256(f"{call_sid}:{seq}".encode()).hexdigest()[:32]


def normalise_number(number: str) -> str:
    """A phone number with only its digits and '+'; a sip: URI without its parameters."""
    text = number.strip()
    if text.lower().startswith("sip:"):
        return text.split(";", 1)[0].lower()
    return re.sub(r"[^\d+]", "", text)


def is_ascii_number(text: str) -> bool:
    """Plain ASCII digits only: str.isdigit() also accepts '²', which int() refuses."""
    return text.isascii() and text.isdigit()
