from __future__ import annotations

from pathlib import Path

import pytest

from energymeter.errors import ConfigError
from energymeter.settings import Settings, resolve_settings


def test_defaults(tmp_path: Path) -> None:
    s = resolve_settings(env={}, cwd=tmp_path)
    assert s == Settings()
    assert s.interval_s == 0.1 and s.pue == 1.0 and s.out == Path("energymeter-runs")
    assert s.origin("interval_s") == "default"


def test_precedence_argument_env_pyproject_default(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        "[tool.energymeter]\ninterval_s = 0.5\npue = 1.2\nregion = 'SE'\n")
    env = {"ENERGYMETER_INTERVAL_S": "0.25", "ENERGYMETER_PUE": "1.3"}
    s = resolve_settings({"interval_s": 0.05}, env=env, cwd=tmp_path)
    assert s.interval_s == 0.05 and s.origin("interval_s") == "argument"
    assert s.pue == 1.3 and s.origin("pue") == "env"
    assert s.region == "SE" and s.origin("region") == "pyproject"
    assert s.out == Path("energymeter-runs") and s.origin("out") == "default"


def test_none_argument_means_not_given(tmp_path: Path) -> None:
    s = resolve_settings({"pue": None}, env={"ENERGYMETER_PUE": "1.5"}, cwd=tmp_path)
    assert s.pue == 1.5


@pytest.mark.parametrize("overrides, needle", [
    ({"interval_s": 0.0001}, "at least 0.001"),
    ({"interval_s": "fast"}, "must be a number"),
    ({"pue": 0.8}, ">= 1.0"),
    ({"carbon_table": "mine"}, "accepted: auto, ember, electricitymaps"),
    ({"colour": "red"}, "unknown setting"),
])
def test_bad_values_say_what_is_accepted(tmp_path: Path, overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_settings(overrides, env={}, cwd=tmp_path)


def test_bad_env_names_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"\$ENERGYMETER_INTERVAL_S"):
        resolve_settings(env={"ENERGYMETER_INTERVAL_S": "x"}, cwd=tmp_path)


def test_unknown_pyproject_key(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.energymeter]\nintervall = 1\n")
    with pytest.raises(ConfigError, match="unknown key"):
        resolve_settings(env={}, cwd=tmp_path)


# -- bad pyproject files, bounds, types, misspelled variables ---------------
def test_pyproject_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_bytes(b"[tool.energymeter]\nregion = '\xff\xfe'\n")
    with pytest.raises(ConfigError, match="UTF-8") as info:
        resolve_settings(env={}, cwd=tmp_path)
    assert str(tmp_path / "pyproject.toml") in str(info.value)


@pytest.mark.parametrize("text", ["tool = 5\n", "tool = [1]\n", "[tool]\nenergymeter = 5\n",
                                  "[tool]\nenergymeter = [1]\n"])
def test_pyproject_tool_not_a_table(tmp_path: Path, text: str) -> None:
    (tmp_path / "pyproject.toml").write_text(text)
    with pytest.raises(ConfigError, match="must be a table"):
        resolve_settings(env={}, cwd=tmp_path)


@pytest.mark.parametrize("overrides, needle", [
    ({"interval_s": 1e10}, "at most 3600"),
    ({"gauge_interval_s": 1e10}, "at most 3600"),
    ({"carbon_poll_s": 1e12}, "at most 86400"),
    ({"carbon_timeout_s": 1e9}, "at most 300"),
    ({"pue": 1e300}, "at most 3"),
    ({"pue": 3.5}, "at most 3"),
    ({"price_per_kwh": 1e300}, "at most"),
    ({"interval_s": True}, "not true/false"),
    ({"pue": False}, "not true/false"),
    ({"price_per_kwh": True}, "not true/false"),
    ({"out": ""}, "non-empty"),
    ({"out": "   "}, "non-empty"),
    ({"out": {"a": 1}}, "a path"),
    ({"out": 5}, "a path"),
    ({"powercap_root": ["/sys"]}, "a path"),
    ({"currency": 5}, "currency"),
    ({"currency": "a very long currency name"}, "1 to 8 characters"),
    ({"currency": ""}, "1 to 8 characters"),
    ({"region": 46}, "a string"),
    ({"region": {"a": 1}}, "a string"),
    ({"carbon_table": 5}, "accepted: auto"),
])
def test_bounds_and_types(tmp_path: Path, overrides: dict, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        resolve_settings(overrides, env={}, cwd=tmp_path)


@pytest.mark.parametrize("line, needle", [
    ("out = {a=1}", "out from pyproject.toml"),
    ("interval_s = true", "not true/false"),
    ("interval_s = 1e10", "at most 3600"),
    ("region = 46", "a string"),
    ("currency = 1.5", "currency"),
    ("powercap_root = ''", "non-empty"),
])
def test_bad_pyproject_values(tmp_path: Path, line: str, needle: str) -> None:
    (tmp_path / "pyproject.toml").write_text(f"[tool.energymeter]\n{line}\n")
    with pytest.raises(ConfigError, match=needle):
        resolve_settings(env={}, cwd=tmp_path)


def test_bounds_keep_sane_values(tmp_path: Path) -> None:
    s = resolve_settings({"interval_s": 3600, "pue": 3.0, "out": Path("x"), "currency": "sek",
                          "region": " SE ", "price_per_kwh": 0}, env={}, cwd=tmp_path)
    assert (s.interval_s, s.pue, s.out, s.currency, s.region) == (3600.0, 3.0, Path("x"),
                                                                  "SEK", "SE")
    env = {"ENERGYMETER_INTERVAL_S": "0.5", "ENERGYMETER_OUT": "~/runs"}
    s = resolve_settings(env=env, cwd=tmp_path)
    assert s.interval_s == 0.5 and s.out == Path.home() / "runs"


def test_misspelled_variable_warns_once_with_the_closest_name(
        tmp_path: Path, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    import logging

    from energymeter import settings
    from energymeter.settings import NON_SETTING_ENV

    monkeypatch.setattr(settings, "_warned_env", set())  # whatever other tests warned about

    env = {"ENERGYMETER_INTERVAL": "0.5", "ENERGYMETER_PEU": "1.2",
           "ENERGYMETER_RUN_ID": "abc", "ENERGYMETER_RUN_DIR": "/tmp/x",
           "ENERGYMETER_ELECTRICITYMAPS_TOKEN": "t", "ENERGYMETER_ELECTRICITYMAPS_URL": "u",
           "ENERGYMETER_GB_CARBON_URL": "u", "ENERGYMETER_POWERCAP_ROOT": "/sys/class/powercap",
           "OTHER": "1"}
    assert {"ENERGYMETER_RUN_ID", "ENERGYMETER_RUN_DIR", "ENERGYMETER_ELECTRICITYMAPS_TOKEN",
            "ENERGYMETER_ELECTRICITYMAPS_URL", "ENERGYMETER_GB_CARBON_URL"} <= set(NON_SETTING_ENV)
    with caplog.at_level(logging.WARNING, logger="energymeter"):
        s = resolve_settings(env=env, cwd=tmp_path)
        resolve_settings(env=env, cwd=tmp_path)  # once per process per name
    assert s.interval_s == 0.1  # the misspelled one does nothing...
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2, messages  # ...but says so, once each
    assert any("ENERGYMETER_INTERVAL " in m or "ENERGYMETER_INTERVAL is" in m for m in messages)
    assert any("did you mean ENERGYMETER_INTERVAL_S" in m for m in messages)
    assert any("ENERGYMETER_PEU" in m and "did you mean ENERGYMETER_PUE" in m
               for m in messages)


def test_run_with_an_empty_out_exits_2(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.test_cli import invoke

    monkeypatch.chdir(tmp_path)
    code, _, err = invoke("run", "--out", "", "--", "true")
    assert code == 2 and "out" in err and "non-empty" in err
    assert list(tmp_path.iterdir()) == []
