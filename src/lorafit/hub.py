"""Fail fast and clearly when the Hugging Face hub cannot be reached.

Without this, `from_pretrained` and `load_dataset` retry for about 25 seconds before an
error that does not say what to do. One TCP connection with a short timeout answers first.
"""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse

from lorafit.errors import UserError


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def ensure_hub_reachable(what: str, hint: str, timeout: float = 3.0) -> None:
    """Raise `UserError` naming `what` and `hint` unless the hub answers (or offline mode is on).

    With HF_HUB_OFFLINE=1 the libraries read their local cache instead, so no check is made.
    """
    if hub_offline():
        return
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError as e:
        raise UserError(
            f"cannot reach the Hugging Face hub at {endpoint} for {what} ({e.strerror or e}); "
            f"{hint} (or set HF_HUB_OFFLINE=1 to use files cached earlier)"
        ) from None
