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

                # max_retries=0: the learning loop's own back-off (PUBLISH_RETRIES) is the only retry policy
                self._client = LabelStudio(base_url=self.url, api_key=self._api_key, timeout=30, max_retries=0)
            return self._client

    def token(self) -> str | None:
        """The token to put in an Authorization header now (refreshed by the SDK when needed)."""
        if not self.configured:
            return None
        header = self.client._client_wrapper.get_headers().get("Authorization", "")
        return header.split(" ", 1)[1] if " " in header else None


UNCERTAINTY_SAMPLING = "Uncertainty sampling"


def _as_dict(obj) -> dict:
    return obj if isinstance(obj, dict) else obj.model_dump()


class ProjectAPI:
    """The Label Studio calls the learning loop makes for one project (label-studio-sdk)."""

    def __init__(self, connection: LabelStudioConnection, project_id: int) -> None:
        self.connection = connection
        self.project_id = int(project_id)

    @property
    def _client(self):
        return self.connection.client

    def tasks(self) -> list[dict]:
        """Every task with its data and annotations (the source of truth for labels)."""
        # Pages of 100: larger pages with fields=all make LS 1.23 on SQLite fail with
        # "Expression tree is too large (maximum depth 1000)" (seen with 1,000 tasks).
        pager = self._client.tasks.list(project=self.project_id, fields="all", page_size=100)
        out = []
        for task in pager:
            t = _as_dict(task)
            out.append({"id": t["id"], "data": t.get("data") or {},
                        "annotations": [_as_dict(a) for a in (t.get("annotations") or [])]})
        return out

    def import_predictions(self, predictions: list[dict]) -> int:
        response = self._client.projects.import_predictions(id=self.project_id, request=predictions)
        return int(getattr(response, "created", None) or len(predictions))

    def set_model_version(self, version: str, uncertainty_sampling: bool = False) -> None:
        """Point the project at ``version`` (its queue follows only that version's scores) and,
        if asked, switch its queue to uncertainty sampling (lowest score first)."""
        if uncertainty_sampling:
            self._client.projects.update(id=self.project_id, model_version=version, sampling=UNCERTAINTY_SAMPLING)
        else:
            self._client.projects.update(id=self.project_id, model_version=version)

    def model_version(self) -> str:
        return self._client.projects.get(id=self.project_id).model_version or ""

    def delete_version(self, version: str) -> int:
        response = self._client._client_wrapper.httpx_client.request(
            f"api/projects/{self.project_id}/model-versions/", method="DELETE", json={"model_version": version},
        )
        response.raise_for_status()
        return int(response.json().get("deleted_predictions", 0))

    def model_versions(self) -> list[str]:
        response = self._client._client_wrapper.httpx_client.request(
            f"api/projects/{self.project_id}/model-versions/", method="GET",
        )
        response.raise_for_status()
        data = response.json()
        return list(data) if isinstance(data, (list, dict)) else []
