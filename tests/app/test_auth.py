"""The password gate's hashing: salted, verifiable, malformed hashes named clearly."""

from __future__ import annotations

import pytest

from pneumo.app.auth import AuthConfigError, configured_hash, hash_password, verify_password


def test_hash_verifies_only_the_right_password():
    encoded = hash_password("correct horse", n=2**10)
    assert encoded.startswith("scrypt$1024$8$1$")
    assert verify_password("correct horse", encoded)
    assert not verify_password("correct hors", encoded)
    assert not verify_password("", encoded)


def test_hashes_are_salted():
    assert hash_password("pw", n=2**10) != hash_password("pw", n=2**10)


@pytest.mark.parametrize(
    "bad", ["", "plaintext", "md5$1$2$3$4$5", "scrypt$1000$8$1$AAAA$AAAA", "scrypt$1024$8$1$%%$AA"]
)
def test_malformed_hash_is_a_configuration_error(bad):
    with pytest.raises(AuthConfigError, match="PNEUMO_APP_PASSWORD_HASH"):
        verify_password("x", bad)


def test_configured_hash_prefers_environment(monkeypatch):
    from_secrets, from_env = hash_password("a", n=2**10), hash_password("b", n=2**10)
    monkeypatch.delenv("PNEUMO_APP_PASSWORD_HASH", raising=False)
    assert configured_hash() is None
    assert configured_hash({"password_hash": from_secrets}) == from_secrets
    monkeypatch.setenv("PNEUMO_APP_PASSWORD_HASH", from_env)
    assert configured_hash({"password_hash": from_secrets}) == from_env


class _BrokenSecrets:
    """Streamlit raises the same error for a missing and for a malformed secrets.toml."""

    def get(self, key, default=None):
        raise RuntimeError("Error parsing secrets file")


def test_gate_fails_closed_when_configured_but_unreadable(monkeypatch, tmp_path):
    monkeypatch.delenv("PNEUMO_APP_PASSWORD_HASH", raising=False)
    broken = tmp_path / "secrets.toml"
    broken.write_text('password_hash = "scrypt$1024\n')  # unterminated string
    with pytest.raises(AuthConfigError, match="cannot be read"):
        configured_hash(_BrokenSecrets(), [broken])
    # No secrets file at all is the normal case: no password.
    assert configured_hash(_BrokenSecrets(), [tmp_path / "absent.toml"]) is None
    # A typo in a configured hash stops the app at start, not at the first sign-in.
    monkeypatch.setenv("PNEUMO_APP_PASSWORD_HASH", "scrypt$16384$8$1$typo")
    with pytest.raises(AuthConfigError, match="not a valid hash"):
        configured_hash()


def test_cli_prints_a_hash_that_verifies(monkeypatch, capsys):
    import io

    from pneumo.cli import main

    monkeypatch.setattr("sys.stdin", io.StringIO("open sesame\n"))
    assert main(["app", "--hash-password"]) == 0
    encoded = capsys.readouterr().out.strip()
    assert verify_password("open sesame", encoded)
    assert not verify_password("open sesame\n", encoded)


def test_cli_refuses_bad_port_and_missing_model(tmp_path, capsys):
    from pneumo.cli import main

    assert main(["app", "--port", "70000", "--model", str(tmp_path)]) == 2
    assert "--port must be in 1..65535" in capsys.readouterr().err
    assert main(["app", "--model", str(tmp_path)]) == 2
    assert "no model here" in capsys.readouterr().err
