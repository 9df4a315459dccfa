"""Webhook authentication: a per-project secret header that the backend sets on the project's
webhook in Label Studio.

Label Studio's auto-created ML-backend webhook sends no credentials, and anyone who can reach the
backend could otherwise post events to it. The backend holds an API key, so once it has confirmed a
project with Label Studio it writes a header onto that project's webhook (Label Studio webhooks
carry custom headers) and from then on accepts events only with it:

    X-Active-Adaptation-Secret: HMAC-SHA256(master secret, "webhook:<project id>")

The master secret is ``WEBHOOK_SECRET`` or, when that is unset, 32 random bytes created once in
``MODEL_DIR/secrets/webhook.key`` (mode 0600, shared by every worker process). Deriving one value per
project means that a project's admin, who can read that project's webhook headers in Label Studio,
cannot forge events for another project.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Callable

from ml_backend.service.store import Store

HEADER = "X-Active-Adaptation-Secret"


class WebhookSecrets:
    def __init__(self, store: Store, configured: str = "", mask: Callable[[str], None] | None = None) -> None:
        """``configured``: WEBHOOK_SECRET; unset, the master secret is created once in the store
        (shared by every worker process that uses the same MODEL_DIR). ``mask`` receives every header
        value handed out (the log's secret registry), so that no log line ever shows one."""
        self._master = configured.encode() if configured else store.webhook_master_secret(secrets.token_bytes(32))
        self._mask = mask

    def header_for(self, key: str) -> str:
        """The header value to set on project ``key``'s webhook (masked in logs from now on)."""
        value = self.for_project(key)
        if self._mask is not None:
            self._mask(value)
        return value

    def for_project(self, key: str) -> str:
        return hmac.new(self._master, f"webhook:{key}".encode(), hashlib.sha256).hexdigest()

    def check(self, key: str, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self.for_project(key).encode())
