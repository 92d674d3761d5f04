"""The daemon's log: one line per event, as text for people or JSON for log collectors,
with secrets redacted whatever code logged them."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime, timezone


def fields(**kw) -> dict:
    """``extra=`` for a log call: structured fields for --log-format json."""
    return {"fields": kw}


class _Redacting(logging.Formatter):
    """Never let a secret reach the log, whatever code logged it."""

    def __init__(self, secrets: list[str], **kwargs):
        super().__init__(**kwargs)
        self.secrets = [s for s in secrets if s]

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text


class TextFormatter(_Redacting):
    """One line per event, for people reading ``kubectl logs``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        text = f"{stamp} {record.levelname:<7} {record.getMessage()}"
        if record.exc_info:
            text += " | " + self.formatException(record.exc_info)
        return self.redact(" | ".join(line for line in text.splitlines() if line.strip()))


class JsonFormatter(_Redacting):
    """One JSON object per line, for log collectors; structured fields ride along."""

    def format(self, record: logging.LogRecord) -> str:
        data = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(),
                "level": record.levelname.lower(), "logger": record.name,
                "message": record.getMessage()}
        for key, value in (getattr(record, "fields", None) or {}).items():
            data.setdefault(key, value)  # the line's own time, level and message win
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return self.redact(json.dumps(data, default=str, ensure_ascii=False))


def setup_daemon_logging(fmt: str, verbose: int, secrets: list[str]) -> None:
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets) if fmt == "json" else TextFormatter(secrets))
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)
