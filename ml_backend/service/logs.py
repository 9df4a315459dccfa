"""Logging that never shows a secret.

Nothing in this package logs tokens, passwords or Authorization headers; as a second line of
defence a log-record factory masks every registered secret and any Authorization/Token
value that a library might print.
"""

from __future__ import annotations

import logging
import re
import threading

_AUTH_PATTERN = re.compile(
    r"((?:Authorization|X-Api-Key)['\"]?\s*[:=]\s*['\"]?(?:Bearer|Token|Basic)?\s*)([^\s'\",}]+)", re.I
)
MASK = "***"


class SecretRegistry:
    def __init__(self) -> None:
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def add(self, secret: str | None) -> None:
        if secret and len(secret) >= 4:
            with self._lock:
                self._secrets.add(secret)

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return _AUTH_PATTERN.sub(lambda m: m.group(1) + MASK, text)


_installed: list[SecretRegistry] = []


def _install_record_factory(registry: SecretRegistry) -> None:
    """Redact every record when it is created, before any handler (ours, gunicorn's, pytest's)
    sees it. Exception text is redacted too, since it can quote a request."""
    if _installed:
        _installed[0] = registry
        return
    _installed.append(registry)
    previous = logging.getLogRecordFactory()

    def factory(*args, **kwargs):
        record = previous(*args, **kwargs)
        reg = _installed[0]
        try:
            message = record.getMessage()
        except Exception:  # a malformed log call: leave it to logging's own error handling
            return record
        redacted = reg.redact(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = reg.redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return record

    logging.setLogRecordFactory(factory)


def configure_logging(level: str, registry: SecretRegistry) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    _install_record_factory(registry)
    # Libraries that would otherwise log every request URL at INFO/DEBUG.
    for noisy in ("httpx", "urllib3", "label_studio_sdk"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
