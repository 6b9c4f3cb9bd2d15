from __future__ import annotations

import base64
import stat
from pathlib import Path

import pytest

from receiver.core import crypto
from receiver.core.config import Settings
from receiver.core.errors import ConfigError, SecretDecryptError

KEY = base64.urlsafe_b64decode(crypto.generate_key() + "=")


def test_seal_round_trips_and_hides_the_plaintext() -> None:
    sealed = crypto.seal(KEY, "whsec_plain", context="default")
    assert b"whsec_plain" not in sealed
    assert crypto.open_sealed(KEY, sealed, context="default") == "whsec_plain"


def test_same_plaintext_seals_differently() -> None:
    assert crypto.seal(KEY, "same", context="a") != crypto.seal(KEY, "same", context="a")


def test_wrong_key_fails_clearly() -> None:
    sealed = crypto.seal(KEY, "whsec_plain", context="default")
    other = base64.urlsafe_b64decode(crypto.generate_key() + "=")
    with pytest.raises(SecretDecryptError, match="RECEIVER_MASTER_KEY"):
        crypto.open_sealed(other, sealed, context="default")


def test_ciphertext_moved_to_another_row_does_not_open() -> None:
    sealed = crypto.seal(KEY, "whsec_plain", context="alpha")
    with pytest.raises(SecretDecryptError):
        crypto.open_sealed(KEY, sealed, context="beta")


def test_truncated_ciphertext_fails() -> None:
    with pytest.raises(SecretDecryptError):
        crypto.open_sealed(KEY, b"\x01short", context="x")


def test_dev_key_file_is_created_once_with_mode_0600(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(home=tmp_path / "home")
    first = crypto.master_key(settings)
    path = tmp_path / "home" / "master.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "RECEIVER_MASTER_KEY is not set" in caplog.text
    assert crypto.master_key(settings) == first
    assert len(first) == 32


def test_configured_key_wins_over_the_file(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path, master_key=KEY)
    assert crypto.master_key(settings) == KEY
    assert not (tmp_path / "master.key").exists()


def test_corrupt_key_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "master.key").write_text("nope\n")
    with pytest.raises(ConfigError, match=r"master\.key"):
        crypto.master_key(Settings(home=tmp_path))
