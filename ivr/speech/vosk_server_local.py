"""A small vosk-server for tests and development, speaking alphacep's WebSocket protocol.

vosk-server is not on PyPI, so this is a faithful stand-in for its ``websocket/
asr_server.py`` (alphacep/vosk-server), decoding with a real ``KaldiRecognizer``:

- an optional text message ``{"config": {"sample_rate": 8000, "phrase_list": [...],
  "words": 1, "max_alternatives": 0}}`` before the audio;
- binary messages of s16le mono audio; each is answered with one JSON text: a result
  (``{"result": [...], "text": "..."}``) when Vosk's endpointing closed a segment, else a
  partial (``{"partial": "..."}``);
- the text ``{"eof" : 1}`` (spelled exactly so) is answered with the final result, and the
  server ends the connection.

For fail-over tests it can misbehave on purpose: ``--drop-after S`` aborts each connection
(no close handshake, as a crashed machine) once it has received S seconds of audio,
``--stall-after S`` stops answering (and reading) then, keeping the connection open.

Run: ``python -m ivr.speech.vosk_server_local MODEL_DIR --port 2700``; it prints
``listening on ws://HOST:PORT`` once the model is loaded (``--port 0`` picks a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import logging
import os
from typing import Any

from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from ivr.speech.decoding import load_model, vosk_module, warm_up

logger = logging.getLogger("ivr.speech.vosk_server_local")

EOF_MESSAGE = '{"eof" : 1}'


class Faults:
    """Misbehaviour for fail-over tests (None: behave)."""

    def __init__(self, drop_after: float | None = None, stall_after: float | None = None) -> None:
        self.drop_after = drop_after
        self.stall_after = stall_after


def _process_chunk(recogniser: Any, message: str | bytes) -> tuple[str, bool]:
    """Feed one message to the recogniser, as asr_server.py does."""
    if message == EOF_MESSAGE:
        return recogniser.FinalResult(), True
    if recogniser.AcceptWaveform(message):
        return recogniser.Result(), False
    return recogniser.PartialResult(), False


async def _recognise(
    websocket: ServerConnection,
    model: Any,
    pool: concurrent.futures.Executor,
    default_rate: float,
    faults: Faults,
) -> None:
    """Serve one connection: config, audio, eof."""
    vosk = vosk_module()
    recogniser = None
    phrase_list = None
    sample_rate = default_rate
    show_words = True
    max_alternatives = 0
    audio_seconds = 0.0
    loop = asyncio.get_running_loop()
    while True:
        message = await websocket.recv()
        if isinstance(message, str) and "config" in message:
            config = json.loads(message)["config"]
            logger.info("config %s", config)
            phrase_list = config.get("phrase_list", phrase_list)
            sample_rate = float(config.get("sample_rate", sample_rate))
            show_words = bool(config.get("words", show_words))
            max_alternatives = int(config.get("max_alternatives", max_alternatives))
            continue
        if recogniser is None:
            if phrase_list:
                grammar = json.dumps(phrase_list, ensure_ascii=False)
                recogniser = vosk.KaldiRecognizer(model, sample_rate, grammar)
            else:
                recogniser = vosk.KaldiRecognizer(model, sample_rate)
            recogniser.SetWords(show_words)
            recogniser.SetMaxAlternatives(max_alternatives)
        if message != EOF_MESSAGE:
            audio_seconds += len(message) / 2 / sample_rate
            if faults.drop_after is not None and audio_seconds > faults.drop_after:
                websocket.transport.abort()  # like a machine that went away mid-utterance
                return
            if faults.stall_after is not None and audio_seconds > faults.stall_after:
                await asyncio.Event().wait()  # never answers again
        response, stop = await loop.run_in_executor(pool, _process_chunk, recogniser, message)
        await websocket.send(response)
        if stop:
            break


async def run_server(
    model_dir: str,
    host: str = "127.0.0.1",
    port: int = 2700,
    *,
    sample_rate: float = 8000,
    faults: Faults | None = None,
    ready: asyncio.Future[int] | None = None,
) -> None:
    """Load the model and serve until cancelled."""
    vosk_module().SetLogLevel(-1)
    model = load_model(model_dir)
    warm_up(model_dir, int(sample_rate))  # unlike alphacep's: the first caller is not slower
    pool = concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 1)
    faults = faults or Faults()

    async def handler(websocket: ServerConnection) -> None:
        try:
            await _recognise(websocket, model, pool, sample_rate, faults)
        except ConnectionClosed:
            pass

    async with serve(handler, host, port, max_size=2**22) as server:
        bound = server.sockets[0].getsockname()[1]
        print(f"listening on ws://{host}:{bound}", flush=True)
        if ready is not None:
            ready.set_result(bound)
        await asyncio.Future()


def main(argv: list[str] | None = None) -> None:
    """Command line: model folder, address, faults."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("model_dir")
    parser.add_argument("--host", default=os.environ.get("VOSK_SERVER_INTERFACE", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("VOSK_SERVER_PORT", 2700)))
    parser.add_argument("--sample-rate", type=float, default=8000)
    parser.add_argument("--drop-after", type=float, default=None, metavar="SECONDS")
    parser.add_argument("--stall-after", type=float, default=None, metavar="SECONDS")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    faults = Faults(args.drop_after, args.stall_after)
    try:
        asyncio.run(
            run_server(
                args.model_dir, args.host, args.port, sample_rate=args.sample_rate, faults=faults
            )
        )
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
