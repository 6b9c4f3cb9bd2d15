"""Rules stated once in receiver.core and applied the same way by every caller:
ports, secret and token lengths, the master key, unpadded base64, `since`, Retry-After."""

from __future__ import annotations

import argparse
import base64
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from starlette.requests import Request

from receiver.cli import deliveries as cli_deliveries
from receiver.cli import server as cli_server
from receiver.core import base64url, config, crypto, db, durations
from receiver.core.config import Settings
from receiver.core.errors import ConfigError, DatabaseUnavailable
from receiver.inbound import endpoints
from receiver.jobs import api
from receiver.outbound import subscriptions

NOW = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("raw", [b"", b"\x00", b"ab", b"abc", b"\xff\xfe\xfd\xfc", bytes(range(32))])
def test_base64url_drops_padding_and_reads_it_back(raw: bytes) -> None:
    text = base64url.encode(raw)
    assert "=" not in text and "+" not in text and "/" not in text
    assert base64url.decode(text) == raw
    assert base64url.decode(base64.urlsafe_b64encode(raw).decode()) == raw  # padded is read too


@pytest.mark.parametrize("text", ["a", "abcde", "ab!c", "é"])
def test_base64url_refuses_what_is_not_base64(text: str) -> None:
    with pytest.raises(ValueError):
        base64url.decode(text)


@pytest.mark.parametrize("port", [0, 1, 8080, 65535])
def test_check_port_accepts_every_port(port: int) -> None:
    assert config.check_port(port, setting="--port") == port


@pytest.mark.parametrize("port", [-1, 65536, 100000])
def test_check_port_names_the_setting(port: int) -> None:
    with pytest.raises(ConfigError, match=rf"^--x: {port} is not a port number$"):
        config.check_port(port, setting="--x")


def test_every_port_flag_uses_the_one_check() -> None:
    with pytest.raises(ConfigError, match=r"^--port: 65536 is not a port number$"):
        cli_server._with_flags(Settings(), argparse.Namespace(host=None, port=65536, workers=None))
    assert cli_server._with_flags(Settings(), argparse.Namespace(host=None, port=65535, workers=None)).port == 65535
    with pytest.raises(ConfigError, match=r"^--metrics-port: 65536 is not a port number$"):
        cli_server.cmd_publish(Settings(), argparse.Namespace(concurrency=None, metrics_port=65536))
    with pytest.raises(ConfigError, match=r"^--metrics-port: -1 is not a port number$"):
        cli_server.cmd_publish(Settings(metrics_port=-1), argparse.Namespace(concurrency=None, metrics_port=None))


@pytest.mark.parametrize("name", ["RECEIVER_PORT", "RECEIVER_METRICS_PORT"])
def test_port_settings_have_the_same_bounds(name: str) -> None:
    assert getattr(Settings.from_env({name: str(config.MAX_PORT)}), name.removeprefix("RECEIVER_").lower()) == 65535
    assert getattr(Settings.from_env({name: str(config.MIN_PORT)}), name.removeprefix("RECEIVER_").lower()) == 0
    with pytest.raises(ConfigError, match=f"^{name}: 65536 is out of range; use a number between 0 and 65535$"):
        Settings.from_env({name: "65536"})


def test_webhook_secret_floor_is_the_same_from_the_environment_and_the_command_line() -> None:
    short, enough = "s" * (config.MIN_WEBHOOK_SECRET_LENGTH - 1), "s" * config.MIN_WEBHOOK_SECRET_LENGTH
    assert config.MIN_WEBHOOK_SECRET_LENGTH == 8
    assert Settings.from_env({"DOITONG_WEBHOOK_SECRET": enough}).webhook_secrets == (enough,)
    assert endpoints.check_secret(f" {enough} ") == enough
    with pytest.raises(ConfigError, match=r"^DOITONG_WEBHOOK_SECRET: a secret is shorter than 8 characters; "):
        Settings.from_env({"DOITONG_WEBHOOK_SECRET": short})
    with pytest.raises(ConfigError, match=r"^--secret: use at least 8 characters$"):
        endpoints.check_secret(short + "  ")


def test_api_token_and_subscriber_key_are_rules_of_their_own() -> None:
    assert config.MIN_API_TOKEN_LENGTH == 16
    assert Settings.from_env({"RECEIVER_API_TOKEN": "t" * 16}).api_token == "t" * 16
    with pytest.raises(ConfigError, match=r"^RECEIVER_API_TOKEN: use at least 16 random characters"):
        Settings.from_env({"RECEIVER_API_TOKEN": "t" * 15})
    assert subscriptions.MIN_SECRET_KEY_BYTES == 16
    key = bytes(range(16))
    assert subscriptions.secret_key("whsec_" + base64.b64encode(key).decode()) == key
    with pytest.raises(ConfigError, match="at least 16 random bytes"):
        subscriptions.secret_key("whsec_" + base64.b64encode(key[:15]).decode())


def test_master_key_is_read_the_same_from_the_environment_and_the_key_file(tmp_path: Path) -> None:
    text = crypto.generate_key()
    assert "=" not in text
    key = config.decode_master_key(text)
    assert len(key) == config.MASTER_KEY_BYTES
    assert Settings.from_env({"RECEIVER_MASTER_KEY": text}).master_key == key
    (tmp_path / "master.key").write_text(text + "\n")
    assert crypto.master_key(Settings(home=tmp_path)) == key

    short = base64url.encode(bytes(16))
    with pytest.raises(ValueError):
        config.decode_master_key(short)
    with pytest.raises(ConfigError, match=r"^RECEIVER_MASTER_KEY: must be 32 random bytes in URL-safe base64"):
        Settings.from_env({"RECEIVER_MASTER_KEY": short})
    (tmp_path / "master.key").write_text(short + "\n")
    with pytest.raises(ConfigError, match="not a 32-byte URL-safe base64 key"):
        crypto.master_key(Settings(home=tmp_path))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-04-30T10:00:00Z", datetime(2024, 4, 30, 10, 0, tzinfo=UTC)),
        ("2024-04-30T10:00:00", datetime(2024, 4, 30, 10, 0, tzinfo=UTC)),  # no offset: UTC
        ("2024-04-30", datetime(2024, 4, 30, tzinfo=UTC)),
        ("2024-04-30T12:00:00+02:00", datetime(2024, 4, 30, 10, 0, tzinfo=UTC)),
        ("24h", NOW - timedelta(hours=24)),
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("0s", NOW),
    ],
)
def test_since_reads_a_time_or_a_duration_ago(text: str, expected: datetime) -> None:
    moment = durations.since(text, setting="--since", now=NOW)
    assert moment == expected
    assert moment.tzinfo is not None


def test_since_defaults_to_now() -> None:
    before = datetime.now(UTC)
    moment = durations.since("1h", setting="since")
    assert before - timedelta(hours=1) <= moment <= datetime.now(UTC) - timedelta(hours=1)


@pytest.mark.parametrize("text", ["soon", "", "yesterday", "1h 30m", "-5s", "2024-13-01"])
def test_since_refuses_anything_else_naming_the_setting(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--since: .*write it like 30s, 15m, 24h, 7d or 1h30m$"):
        durations.since(text, setting="--since", now=NOW)


def test_since_keeps_each_callers_answer() -> None:
    refused = r"^`since` must be an ISO-8601 time such as \S+ or a duration such as 24h$"
    with pytest.raises(api.BadRequest, match=refused):
        api._since("soon")
    assert api._since("2024-04-30T10:00:00") == datetime(2024, 4, 30, 10, 0, tzinfo=UTC)
    replay = argparse.Namespace(event=None, since="soon", dead=False, job=None, subscriber=None)
    with pytest.raises(ConfigError, match=r"^--since: 'soon' is not a duration; write it like"):
        cli_deliveries.cmd_replay(Settings(), replay)


@pytest.mark.parametrize(("setting", "header"), [("5s", 5), ("7s", 7), ("200ms", 1), ("2600ms", 3), ("2m", 120)])
def test_retry_after_seconds_is_whole_and_at_least_one(setting: str, header: int) -> None:
    assert Settings.from_env({"RECEIVER_RETRY_AFTER": setting}).retry_after_seconds == header


async def test_job_api_answers_503_with_the_configured_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(engine: Any) -> Any:
        raise DatabaseUnavailable("database is away")

    monkeypatch.setattr(db, "begin", unavailable)
    token = "t" * 16
    settings = Settings(api_token=token, retry_after=timedelta(seconds=7))
    app = SimpleNamespace(state=SimpleNamespace(receiver=SimpleNamespace(settings=settings, engine=None)))
    request = Request(
        {
            "type": "http",
            "app": app,
            "method": "GET",
            "path": "/v1/jobs/job-1",
            "query_string": b"",
            "headers": [(b"authorization", f"Bearer {token}".encode())],
            "path_params": {"job_id": "job-1"},
        }
    )
    answer = await api.get_job(request)
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "7"
