"""Structured logging: one JSON object per line, phone numbers masked."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime

_PHONE = re.compile(r"\+?\d[\d\s()-]{5,}\d")
_STANDARD_ATTRIBUTES = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}
_MASKED = frozenset(("from_number", "to_number"))
_ENCODER = json.JSONEncoder(ensure_ascii=False, default=str)  # json.dumps builds one per call


def mask_phone(number: str | None) -> str:
    """Keep only the last four digits: '+79991234567' -> '***4567'."""
    digits = re.sub(r"\D", "", number or "")
    if not digits:
        return ""
    return "***" + digits[-4:]


def mask_phones_in(text: str) -> str:
    """Mask anything in free text that looks like a phone number."""
    return _PHONE.sub(lambda match: mask_phone(match.group()), text)


class JsonFormatter(logging.Formatter):
    """Render a record as one JSON line with its extra fields (call_sid, step, ...)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": mask_phones_in(record.getMessage()),
        }
        for name, value in vars(record).items():
            if name not in _STANDARD_ATTRIBUTES and not name.startswith("_"):
                entry[name] = mask_phone(value) if name in _MASKED else value
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return _ENCODER.encode(entry)


def configure_logging(level: str = "INFO") -> None:
    """Send the service's logs to stderr as JSON lines (idempotent)."""
    logger = logging.getLogger("ivr")
    if any(isinstance(h.formatter, JsonFormatter) for h in logger.handlers):
        return
    # The JSON lines carry no source file, line, thread or process: don't gather them for
    # every record (the logging HOWTO's "Optimization"; a webhook logs one line).
    logging._srcfile = None  # noqa: SLF001 - the documented switch for findCaller
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    logger.setLevel(level)
