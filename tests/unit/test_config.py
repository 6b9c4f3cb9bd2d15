from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from receiver.core import crypto
from receiver.core.config import Settings
from receiver.core.errors import ConfigError


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.database_url is None
    assert settings.webhook_secrets == ()
    assert settings.max_body_bytes == 1024 * 1024
    assert settings.home == Path(".receiver")
    assert (settings.host, settings.port) == ("127.0.0.1", 8080)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://u@db:5432/app",
        "postgres://u@db:5432/app",
        "postgresql://postgres@/receiver?host=/var/run/postgresql",
    ],
)
def test_database_url_schemes(url: str) -> None:
    settings = Settings.from_env({"DATABASE_URL": url})
    assert settings.database_url is not None
    assert settings.database_url.startswith("postgresql://")
    assert settings.database_url.split("://", 1)[1] == url.split("://", 1)[1]


def test_secrets_are_comma_separated_for_rotation() -> None:
    settings = Settings.from_env({"DOITONG_WEBHOOK_SECRET": "new-secret-1, old-secret-2"})
    assert settings.webhook_secrets == ("new-secret-1", "old-secret-2")


def test_master_key_round_trips_keygen_output() -> None:
    settings = Settings.from_env({"RECEIVER_MASTER_KEY": crypto.generate_key()})
    assert settings.master_key is not None and len(settings.master_key) == 32


@pytest.mark.parametrize(
    ("env", "setting"),
    [
        ({"DATABASE_URL": "mysql://x@y/z"}, "DATABASE_URL"),
        ({"RECEIVER_MASTER_KEY": "short"}, "RECEIVER_MASTER_KEY"),
        ({"RECEIVER_MASTER_KEY": "!!!!"}, "RECEIVER_MASTER_KEY"),
        ({"RECEIVER_PORT": "eighty"}, "RECEIVER_PORT"),
        ({"RECEIVER_PORT": "70000"}, "RECEIVER_PORT"),
        ({"RECEIVER_MAX_BODY_BYTES": "10"}, "RECEIVER_MAX_BODY_BYTES"),
        ({"RECEIVER_LOG_FORMAT": "xml"}, "RECEIVER_LOG_FORMAT"),
        ({"RECEIVER_CONSOLE_PROCESS": "thread"}, "RECEIVER_CONSOLE_PROCESS"),
        ({"RECEIVER_LOG_LEVEL": "loud"}, "RECEIVER_LOG_LEVEL"),
        ({"RECEIVER_DB_TIMEOUT": "5 seconds"}, "RECEIVER_DB_TIMEOUT"),
        ({"DOITONG_WEBHOOK_SECRET": "abc"}, "DOITONG_WEBHOOK_SECRET"),
    ],
)
def test_bad_settings_fail_with_one_line_naming_the_setting(env: dict[str, str], setting: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env)
    message = str(caught.value)
    assert message.startswith(setting)
    assert "\n" not in message


def test_durations_are_parsed() -> None:
    settings = Settings.from_env({"RECEIVER_DB_TIMEOUT": "1m30s"})
    assert settings.db_timeout == timedelta(seconds=90)


def test_require_database_url_explains_the_fix() -> None:
    with pytest.raises(ConfigError, match="DATABASE_URL is not set"):
        Settings.from_env({}).require_database_url()
