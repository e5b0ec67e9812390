"""A caller's <Record>: how it ends, the recording Twilio keeps, its status callback.

`RecordingCaller` is the part of `EmulatedCall` (ivr/emulator/caller.py) that plays the
<Record> page: a recording ends by silence, by a key of finishOnKey or by the caller
hanging up; the audio (or silence) goes to the media host; the recordingStatusCallback is
delivered from a thread of its own after `recording_callback_delay`.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from ivr.emulator.http import API_VERSION, new_sid

RECORD_FINISH_DEFAULT = "1234567890*#"  # the <Record> page


@dataclass(frozen=True)
class _Silent:
    """A silent recording on Twilio's side when no media host is at hand (never fetched)."""

    sid: str
    duration: int = 0


class RecordingCaller:
    """Ending a <Record> and storing what was said: a mixin of `EmulatedCall`.

    It uses the call's `result`, `media`, `account_sid`, `post`, `_fetch`, `_run`,
    `_document_url`, `_callbacks` and its recording settings.
    """

    def _record_ended(
        self,
        verb: ElementTree.Element,
        audio: Path | None,
        finish_key: str = "",
        caller_gone: bool = False,
    ):
        """A <Record> ended: by silence, by a key of finishOnKey, or by the caller hanging up."""
        self._waiting = None
        finish = verb.get("finishOnKey", RECORD_FINISH_DEFAULT)
        if finish_key and finish_key != "hangup" and finish_key not in finish:
            finish_key = ""  # a key not in finishOnKey does not end the recording
        recording = self._store_recording(audio)
        empty = recording[1].duration == 0
        self._recording_status_callback(verb, recording, "absent" if empty else "completed")
        if empty and self.empty_recording == "skip" and not caller_gone:
            self._run()  # the older behaviour: no action request, the next verb runs
            return self
        params = {
            "RecordingUrl": recording[0],
            "RecordingSid": recording[1].sid,
            "RecordingDuration": str(recording[1].duration),
        }
        if finish_key:
            params["Digits"] = finish_key
        if caller_gone:
            self.post(verb.get("action") or self._document_url, params)
            return self
        self._fetch(verb.get("action") or self._document_url, params)
        return self

    def _store_recording(self, audio: Path | None):
        """(RecordingUrl, recording) for what the caller said: the audio, or silence."""
        if self.media is None:
            if audio is not None:
                raise RuntimeError("speaking into a <Record> needs a MediaServer")
            sid = new_sid("RE")
            url = (
                f"https://api.twilio.com/{API_VERSION}/Accounts/{self.account_sid}/Recordings/{sid}"
            )
            return url, _Silent(sid)
        if audio is None:
            url, recording = self.media.add_silence(self.account_sid)
        else:
            url, recording = self.media.add(
                self.account_sid, audio, self.recording_not_ready_fetches
            )
        self.result.recordings.append(url)
        return url, recording

    def _recording_status_callback(self, verb, recording, status: str) -> None:
        url = verb.get("recordingStatusCallback")
        events = verb.get("recordingStatusCallbackEvent", "completed").split()
        if not url or status not in events:
            return
        recording_url, item = recording
        params = {
            "RecordingStatus": status,
            "RecordingSource": "RecordVerb",
            "RecordingChannels": "1",
            "RecordingStartTime": time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime()),
            "RecordingSid": item.sid,
            "RecordingDuration": str(item.duration),
        }
        if status == "completed":
            params["RecordingUrl"] = recording_url
        absolute = urllib.parse.urljoin(self._document_url, url)

        def deliver() -> None:
            time.sleep(self.recording_callback_delay)
            status_code, _, _ = self.post(absolute, params)
            if status_code >= 400:
                self.result.errors.append(f"HTTP {status_code} from recording status callback")

        thread = threading.Thread(target=deliver, daemon=True)
        self._callbacks.append(thread)
        thread.start()
