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
import os
import secrets
from pathlib import Path

HEADER = "X-Active-Adaptation-Secret"


class WebhookSecrets:
    def __init__(self, model_dir: Path, configured: str = "") -> None:
        self.path = Path(model_dir) / "secrets" / "webhook.key"
        self._master = configured.encode() if configured else self._load_or_create()

    def _load_or_create(self) -> bytes:
        """The shared master secret; created atomically (O_EXCL), so that concurrent workers agree."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.chmod(self.path.parent, 0o700)
        except OSError:
            pass
        for _ in range(50):
            try:
                data = self.path.read_bytes()
                if len(data) >= 32:
                    return data
            except FileNotFoundError:
                pass
            tmp = self.path.with_name(f".webhook.key.{os.getpid()}.{secrets.token_hex(4)}")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, secrets.token_bytes(32))
                os.fsync(fd)
            finally:
                os.close(fd)
            try:
                os.link(tmp, self.path)  # fails if another process created it first: use theirs
            except FileExistsError:
                pass
            finally:
                tmp.unlink(missing_ok=True)
        raise OSError(f"cannot create the webhook secret {self.path}")

    def for_project(self, key: str) -> str:
        return hmac.new(self._master, f"webhook:{key}".encode(), hashlib.sha256).hexdigest()

    def check(self, key: str, presented: str | None) -> bool:
        if not presented:
            return False
        return hmac.compare_digest(presented.strip().encode(), self.for_project(key).encode())
