"""The Function's settings forms and what they map to, one module per seam.

* ``admin_form`` -- ``Valves``, the system settings (Open WebUI's admin form);
* ``user_form`` -- ``UserValves``, one user's overrides ("inherit" by default);
* ``effective`` -- ``effective_settings``, the per-request merge of the two;
* ``engine_settings`` -- the valves as ``EngineConfig`` and ``StoreSettings``;
* ``stored_secrets`` -- secret valves at rest (``encrypt_secret``, ``decrypt_secret``);
* ``errors`` -- ``ValveError`` and readable lines for a rejected form;
* ``fields`` -- how a field is declared (``bounded``, ``from_environment``, ...);
* ``choices``, ``env_defaults`` -- the values fields take, and defaults from the environment.

How Open WebUI 0.12.4 validates, stores and draws these forms, and why the
fields are declared as they are, is in docs/open-webui-valves.md.
"""

from orpipe.adapters.openwebui.valves.admin_form import Valves
from orpipe.adapters.openwebui.valves.choices import STREAMING_PRESETS, StreamingLimits
from orpipe.adapters.openwebui.valves.effective import EffectiveSettings, effective_settings
from orpipe.adapters.openwebui.valves.errors import ValveError, describe_validation_error
from orpipe.adapters.openwebui.valves.stored_secrets import (
    ENCRYPTED_PREFIX,
    decrypt_secret,
    encrypt_secret,
    secret_storage_warning,
)
from orpipe.adapters.openwebui.valves.user_form import UserValves

__all__ = [
    "ENCRYPTED_PREFIX",
    "STREAMING_PRESETS",
    "EffectiveSettings",
    "StreamingLimits",
    "UserValves",
    "ValveError",
    "Valves",
    "decrypt_secret",
    "describe_validation_error",
    "effective_settings",
    "encrypt_secret",
    "secret_storage_warning",
]
