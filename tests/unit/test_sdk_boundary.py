"""What label-studio-sdk does not expose publicly (its client wrapper, token client and
``_extensions`` helpers) is used in one module, ``ml_backend/service/sdk.py``, written against the
pinned version: no other module may mention those names."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ADAPTER = ROOT / "ml_backend" / "service" / "sdk.py"
PRIVATE = re.compile(
    r"_client_wrapper|\bhttpx_client\b|_tokens_client|_use_legacy_token|(?<![A-Za-z0-9])_access_token"
    r"|label_studio_sdk\._extensions|\b_extensions\.label_studio_tools"
)


def test_only_the_adapter_touches_the_sdks_internals():
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in sorted((ROOT / "ml_backend").rglob("*.py"))
        if path != ADAPTER
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if PRIVATE.search(line)
    ]
    assert not found, found


def test_the_pattern_finds_what_the_adapter_uses():
    """The check looks for the right names: the adapter itself uses each of them."""
    text = ADAPTER.read_text()
    for name in ("_client_wrapper", "httpx_client", "_tokens_client", "_use_legacy_token", "_access_token"):
        assert PRIVATE.search(name) and name in text, name
    assert PRIVATE.search("from label_studio_sdk._extensions.label_studio_tools.core.utils.io import x")
    assert "label_studio_sdk._extensions" in text
    assert not PRIVATE.search("def personal_access_token(self):")  # a public name that only looks alike
