"""Secret valves at rest: how ``API_KEY`` (and the other secret valves) are stored.

With ``WEBUI_SECRET_KEY`` set, a secret is stored as ``"encrypted:" + Fernet token``
(``encrypt_secret``) and read back only where it is used (``decrypt_secret``);
a value that cannot be decrypted is an error, never the key (inventory §K.2
item 17). Without that secret Open WebUI stores the text as it is, and
``secret_storage_warning`` tells the admin once.
"""

from __future__ import annotations

import base64
import os

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from orpipe.adapters.openwebui.valves.errors import ValveError

__all__ = ["ENCRYPTED_PREFIX", "decrypt_secret", "encrypt_secret", "secret_storage_warning"]

#: Marks a stored value as a Fernet token (the original pipe used the same prefix).
ENCRYPTED_PREFIX = "encrypted:"
_HKDF_SALT = b"orpipe/owui-valves/hkdf-salt/v1"
_HKDF_INFO = b"orpipe valve encryption v1"
_UNREADABLE_KEY = (
    "The API_KEY valve was encrypted with a different WEBUI_SECRET_KEY and cannot be read. "
    "Paste the OpenRouter key into the API_KEY valve again."
)


def _webui_secret() -> str:
    """Open WebUI's secret as this process sees it now ("" when unset).

    Read on every call so a test or a late ``open-webui serve`` (which puts the
    secret from ``.webui_secret_key`` into the environment) is honoured. The
    legacy name is Open WebUI's own fallback (``env.py``).
    """
    return os.environ.get("WEBUI_SECRET_KEY") or os.environ.get("WEBUI_JWT_SECRET_KEY") or ""


def _fernet(secret: str) -> Fernet:
    # Deriving costs about 5 us, so nothing is cached: no copy of the
    # secret outlives the call.
    raw = HKDF(algorithm=hashes.SHA256(), length=32, salt=_HKDF_SALT, info=_HKDF_INFO).derive(
        secret.encode("utf-8")
    )
    return Fernet(base64.urlsafe_b64encode(raw))


def encrypt_secret(plain: str) -> str:
    """The form in which a secret valve is stored.

    With ``WEBUI_SECRET_KEY`` set: ``"encrypted:" + Fernet token``, the Fernet
    key being HKDF-SHA256 of the secret (salt ``b"orpipe/owui-valves/hkdf-salt/v1"``,
    info ``b"orpipe valve encryption v1"``). Without it the text is returned
    as is and Open WebUI stores it in plain text (``secret_storage_warning``
    says so). An empty value, or one already encrypted, is returned unchanged,
    so re-validating a stored value never encrypts twice.
    """
    if not plain or plain.startswith(ENCRYPTED_PREFIX):
        return plain
    secret = _webui_secret()
    if not secret:
        return plain
    token = _fernet(secret).encrypt(plain.encode("utf-8")).decode("ascii")
    return ENCRYPTED_PREFIX + token


def decrypt_secret(stored: str, *, valve: str = "API_KEY") -> str:
    """The plain secret of a stored valve value (plain text passes through).

    An ``encrypted:`` value that cannot be decrypted -- the secret was rotated
    or is missing in this process, or the token is damaged -- raises
    ``ValveError``; it is never handed on as if it were the key.
    """
    if not stored.startswith(ENCRYPTED_PREFIX):
        return stored
    unreadable = _UNREADABLE_KEY if valve == "API_KEY" else _unreadable(valve)
    secret = _webui_secret()
    if not secret:
        raise ValveError(valve, unreadable + " (WEBUI_SECRET_KEY is not set in this process.)")
    token = stored[len(ENCRYPTED_PREFIX) :].encode("ascii", errors="replace")
    try:
        return _fernet(secret).decrypt(token).decode("utf-8")
    except (InvalidToken, UnicodeDecodeError):
        # ``from None``: the cryptography error adds nothing and the chained
        # traceback would show the token.
        raise ValveError(valve, unreadable) from None


def _unreadable(valve: str) -> str:
    return (
        f"The {valve} valve was encrypted with a different WEBUI_SECRET_KEY and cannot be "
        f"read. Enter it into the {valve} valve again."
    )


def secret_storage_warning() -> str | None:
    """A one-time notice for the admin when the API key would be stored unencrypted."""
    if _webui_secret():
        return None
    return (
        "WEBUI_SECRET_KEY is not set, so the API_KEY valve is stored as plain text in "
        "Open WebUI's database. Set WEBUI_SECRET_KEY (the same value on every worker) "
        "and save the API_KEY valve again to store it encrypted."
    )
