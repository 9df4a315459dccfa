"""Talking to Label Studio with label-studio-sdk (the maintained client, PAT-aware)."""
from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class LabelStudioConnection:
    """Lazily creates one SDK client; hands out a currently valid token for image downloads.

    A Personal Access Token (a JWT refresh token) is exchanged for a short-lived access token by
    the SDK, which refreshes it when it expires; a raw PAT is 401 everywhere. A legacy token is
    used as it is.
    """

    def __init__(self, url: str, api_key: str) -> None:
        self.url = url.rstrip("/")
        self._api_key = api_key
        self._client = None
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self.url and self._api_key)

    @property
    def client(self):
        if not self.configured:
            raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must both be set")
        with self._lock:
            if self._client is None:
                from label_studio_sdk import LabelStudio

                self._client = LabelStudio(base_url=self.url, api_key=self._api_key, timeout=30)
            return self._client

    def token(self) -> str | None:
        """The token to put in an Authorization header now (refreshed by the SDK when needed)."""
        if not self.configured:
            return None
        header = self.client._client_wrapper.get_headers().get("Authorization", "")
        return header.split(" ", 1)[1] if " " in header else None
