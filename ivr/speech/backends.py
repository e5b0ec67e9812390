"""Which streaming recogniser the settings ask for (the one place that knows both back-ends).

Kept apart from ivr.speech.streaming, which both back-ends import: choosing one here keeps
the imports one-way (streaming <- stream_local, stream_remote <- backends).
"""

from __future__ import annotations

from collections.abc import Sequence

from ivr.speech.stream_local import LocalStreamingRecognizer
from ivr.speech.stream_remote import RemoteStreamingRecognizer
from ivr.speech.streaming import EndpointRules, StreamingRecognizer


def build_streaming_recognizer(
    models: dict[str, str],
    server_urls: Sequence[str] = (),
    *,
    workers: int = 2,
    rules: EndpointRules | None = None,
) -> StreamingRecognizer:
    """The back-end the settings ask for: vosk-server URLs if any, else local workers."""
    if server_urls:
        return RemoteStreamingRecognizer(server_urls, languages=sorted(models) or None, rules=rules)
    return LocalStreamingRecognizer(models, workers=workers, rules=rules)
