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
