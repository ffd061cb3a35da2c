"""Config.load: defaults < TOML file < SMARTBROKER_* env < flags, and every bad input as
one ConfigError line (the CLI prints it as is)."""

from __future__ import annotations

from pathlib import Path

import pytest

from smartbroker.config import Config, ConfigError


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The developer's own SMARTBROKER_* variables must not decide these tests."""
    import os

    for name in list(os.environ):
        if name.startswith("SMARTBROKER_"):
            monkeypatch.delenv(name)


def toml(tmp_path: Path, text: str, name: str = "smartbroker.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    cfg = Config.load()
    assert (cfg.port, cfg.management_port, cfg.log_level, cfg.fsync) == (5672, 15672, "info", "batch")
    assert cfg.collect_statistics_interval == 5000


def test_file_over_defaults_env_over_file_flags_over_env(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    path = toml(tmp_path, 'port = 1001\nheartbeat = 11\nlog-level = "warning"\n')
    cfg = Config.load(path)
    assert (cfg.port, cfg.heartbeat, cfg.log_level) == (1001, 11, "warning")
    monkeypatch.setenv("SMARTBROKER_PORT", "2002")
    cfg = Config.load(path)
    assert (cfg.port, cfg.heartbeat) == (2002, 11)  # env wins only where it is set
    cfg = Config.load(path, port=3003, heartbeat=None)  # an unset flag is None: no say
    assert (cfg.port, cfg.heartbeat, cfg.log_level) == (3003, 11, "warning")


def test_smartbroker_table_and_field_spelling(tmp_path: Path) -> None:
    path = toml(tmp_path, '[smartbroker]\nmanagement_port = 1\ndata-dir = "x/y"\n')
    cfg = Config.load(path)
    assert cfg.management_port == 1 and cfg.data_dir == Path("x/y")


def test_list_from_env_is_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTBROKER_LOOPBACK_USERS", '["a", "b"]')
    assert Config.load().loopback_users == ["a", "b"]


def test_loaded_config_is_a_config(tmp_path: Path) -> None:
    cfg = Config.load(toml(tmp_path, "port = 1\n"))
    assert isinstance(cfg, Config)
    assert Config.load().port == 5672  # the file of one load does not stick to the class


@pytest.mark.parametrize(("text", "expected"), [
    ("port = 70000\n", "invalid setting port: Input should be less than or equal to 65535"),
    ("bogus = 1\n", "invalid setting bogus: Extra inputs are not permitted"),
    ('fsync = "sometimes"\n', "invalid setting fsync: Input should be 'always', 'batch' or 'never'"),
    ("port = [\n", "is not valid TOML: "),
    ("smartbroker = 1\n", "'smartbroker' is not a table"),
])
def test_bad_file_is_one_line(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        Config.load(toml(tmp_path, text))
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_file_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bin.toml"
    path.write_bytes(b"\xff\xfe")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        Config.load(path)


def test_missing_file_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file .*: No such file or directory"):
        Config.load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="Is a directory"):
        Config.load(tmp_path)


def test_bad_env_and_bad_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMARTBROKER_LOOPBACK_USERS", "not json")
    with pytest.raises(ConfigError, match='invalid setting: .*"loopback_users"'):
        Config.load()
    monkeypatch.delenv("SMARTBROKER_LOOPBACK_USERS")
    monkeypatch.setenv("SMARTBROKER_HEARTBEAT", "often")
    with pytest.raises(ConfigError, match="invalid setting heartbeat: "):
        Config.load()
    with pytest.raises(ConfigError, match="invalid setting collect_statistics_interval: "):
        Config.load(heartbeat=1, collect_statistics_interval=0)
