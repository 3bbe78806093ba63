"""The optional password gate. The app stores no passwords, only one salted scrypt hash, set
in ``$PNEUMO_APP_PASSWORD_HASH`` or as ``password_hash`` in ``.streamlit/secrets.toml``.

Hash format (one line, ``$``-separated, base64 without padding for salt and key)::

    scrypt$<n>$<r>$<p>$<salt>$<key>

Make one with ``pneumo app --hash-password`` (reads the password from the terminal).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets

from pneumo.errors import PneumoError
from pneumo.settings_env import EnvReader

ENV_VAR = "PNEUMO_APP_PASSWORD_HASH"
SECRET_KEY = "password_hash"
SCHEME = "scrypt"
KEY_BYTES = 32


class AuthConfigError(PneumoError):
    """The configured password hash is malformed."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)


def hash_password(password: str, *, n: int = 2**14, r: int = 8, p: int = 1) -> str:
    """A salted scrypt hash of ``password`` in the documented one-line format."""
    if not password:
        raise ValueError("the password must not be empty")
    salt = secrets.token_bytes(16)
    key = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, dklen=KEY_BYTES)
    return f"{SCHEME}${n}${r}${p}${_b64(salt)}${_b64(key)}"


def verify_password(password: str, encoded: str) -> bool:
    """Whether ``password`` matches ``encoded``; compared in constant time."""
    n_i, r_i, p_i, salt_b, key_b = parse_hash(encoded)
    candidate = hashlib.scrypt(
        password.encode(),
        salt=salt_b,
        n=n_i,
        r=r_i,
        p=p_i,
        dklen=len(key_b),
        maxmem=256 * 1024 * 1024,
    )
    return hmac.compare_digest(candidate, key_b)


def parse_hash(encoded: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, key) of a hash in the documented format, or AuthConfigError."""
    try:
        scheme, n, r, p, salt, key = encoded.strip().split("$")
        if scheme != SCHEME:
            raise ValueError(f"unknown scheme {scheme!r}")
        n_i, r_i, p_i = int(n), int(r), int(p)
        salt_b, key_b = _unb64(salt), _unb64(key)
        if n_i < 2**10 or n_i & (n_i - 1) or not 1 <= r_i <= 64 or not 1 <= p_i <= 16:
            raise ValueError("scrypt parameters out of range")
    except (ValueError, TypeError) as exc:
        raise AuthConfigError(
            f"{ENV_VAR} (or the '{SECRET_KEY}' secret) is not a valid hash: {exc}; expected "
            "scrypt$<n>$<r>$<p>$<salt>$<key>, made with `pneumo app --hash-password`"
        ) from None
    return n_i, r_i, p_i, salt_b, key_b


def configured_hash(secrets_mapping=None, secrets_files=()) -> str | None:
    """The password hash from the environment, else from Streamlit secrets; None when the app
    runs without a password. Fails closed: a secrets file that exists but cannot be read, or a
    configured hash that is malformed, is an AuthConfigError, never "no password"."""
    value = EnvReader().text(ENV_VAR) or ""
    if not value and secrets_mapping is not None:
        try:
            value = str(secrets_mapping.get(SECRET_KEY, "") or "").strip()
        except Exception as exc:  # Streamlit raises one error for a missing and a broken file
            present = [str(f) for f in secrets_files if os.path.exists(f)]
            if present:
                raise AuthConfigError(
                    f"the secrets file {present[0]} cannot be read ({type(exc).__name__}: "
                    f"{str(exc).splitlines()[0] if str(exc) else 'no detail'}); the app will "
                    "not serve without the password gate it may configure"
                ) from None
            value = ""
    if value:
        parse_hash(value)  # a typo in the hash stops the app here, not at the first sign-in
    return value or None
