"""Logging that never shows a secret.

Nothing in this package logs tokens, passwords or Authorization headers; as a second line of
defence a filter on the root handlers masks every registered secret and any Authorization/Token
value that a library might print.
"""
from __future__ import annotations

import logging
import re
import threading

_AUTH_PATTERN = re.compile(r"((?:Authorization|X-Api-Key)['\"]?\s*[:=]\s*['\"]?(?:Bearer|Token|Basic)?\s*)([^\s'\",}]+)", re.I)
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


class RedactingFilter(logging.Filter):
    def __init__(self, registry: SecretRegistry) -> None:
        super().__init__()
        self.registry = registry

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.registry.redact(message)
        if redacted != message or record.exc_info:
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                record.exc_text = self.registry.redact(record.exc_text)
            record.msg, record.args = redacted, None
        return True


def configure_logging(level: str, registry: SecretRegistry) -> None:
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for handler in root.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter(registry))
        else:
            for f in handler.filters:
                if isinstance(f, RedactingFilter):
                    f.registry = registry
    # Libraries that would otherwise log every request URL at INFO/DEBUG.
    for noisy in ("httpx", "urllib3", "label_studio_sdk"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
