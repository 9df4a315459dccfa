"""What this backend needs from label-studio-sdk beyond its public API: the one module that touches
the SDK's internals. Written against label-studio-sdk==2.1.2 (pinned in pyproject.toml); each
function names the internal it uses and why, so that an upgrade is checked here and only here
(``tests/unit/test_sdk_boundary.py`` keeps every other module off these names)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Callable

# not the SDK's client (``label_studio_sdk.LabelStudio`` takes seconds to import: ``ls_client``
# imports it when a client is first needed), only its media helpers, which import quickly
from label_studio_sdk._extensions.label_studio_tools.core.utils.io import get_local_path, http_session


def request(client, path: str, method: str, **kwargs):
    """An HTTP request to a Label Studio API path (the httpx response; the caller checks its status).

    Uses ``client._client_wrapper.httpx_client``: the SDK's own HTTP client, which joins the base
    URL, sends the Authorization header (a PAT's short-lived access token, refreshed when it
    expires) and applies the client's timeout and retry settings, exactly as the SDK's methods do.
    Needed for the calls 2.1.2 has no method for, or none that does what we need: task pages with
    ``fields=task_only`` and a Data Manager ``query`` (a fast listing that ``tasks.list`` does not
    offer), the model-versions endpoint (list, delete), Data Manager actions
    (``delete_tasks_predictions``) and Data Manager views with their raw ``data``."""
    return client._client_wrapper.httpx_client.request(path, method=method, **kwargs)


@dataclass(frozen=True)
class Tokens:
    """How the SDK authenticates now: a legacy token (sent as it is), or a PAT whose access token
    it caches until ``expires`` (None: none fetched yet)."""

    legacy: bool
    access_token: str | None
    expires: datetime | None
    refresh: Callable[[], str]  # a valid access token, fetched from Label Studio when needed (blocks)


def tokens(client) -> Tokens:
    """The client's token state, read now.

    Uses ``client._client_wrapper._tokens_client`` (``TokensClientExt``) and its
    ``_use_legacy_token``, ``_access_token`` and ``_access_token_expiration``: image downloads go
    through label-studio-sdk's resolver and our own HTTP session, not through the SDK's client, so
    they need the token the SDK would send. The public ``api_key`` property returns it, but
    refreshes an expired access token inline (a call to Label Studio that can hang for the SDK's
    30 s); reading the cache first lets the caller run the refresh in the background with its own
    bound (``LabelStudioConnection.token``)."""
    client_tokens = client._client_wrapper._tokens_client
    return Tokens(
        legacy=bool(client_tokens._use_legacy_token),
        access_token=client_tokens._access_token,
        expires=client_tokens._access_token_expiration,
        refresh=lambda: client_tokens.api_key,
    )


def local_path(url: str, session, cache_dir: str, hostname: str | None, access_token: str | None, task_id) -> str:
    """The local path of an image reference, downloaded into ``cache_dir`` (or found there).

    Uses ``label_studio_sdk._extensions.label_studio_tools.core.utils.io``: ``get_local_path``
    resolves every kind of reference Label Studio produces (uploads, local files, cloud URIs
    presigned by Label Studio with the task id, plain URLs), sends the credentials only to the
    Label Studio host and caches downloads; ``http_session`` makes it download through ``session``
    (our :class:`~ml_backend.service.downloads.BoundedSession`: byte limit, deadline). Neither is
    exported by the SDK's public API in 2.1.2."""
    with http_session(session):
        return get_local_path(
            url,
            cache_dir=cache_dir,
            hostname=hostname,
            access_token=access_token,
            download_resources=True,
            task_id=task_id,
        )
