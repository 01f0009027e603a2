from __future__ import annotations

import pytest
from pydantic import ValidationError

from base.errors import JobSpecError
from config.settings import Settings
from tasks.contract import resolve

MiB = 1024**2


def test_production_defaults_follow_the_security_design() -> None:
    s = Settings()
    assert (s.defaults.cpus, s.defaults.memory_bytes, s.defaults.pids) == (2.0, 4 * 1024**3, 256)
    assert s.defaults.disk_bytes == 5 * 1024**3


def test_timeouts_are_ordered() -> None:
    s = Settings()
    assert s.maximums.timeout_s < s.soft_time_limit_s < s.hard_time_limit_s < s.timeouts.visibility_timeout_s


def test_a_setting_that_breaks_the_timeout_order_is_refused() -> None:
    with pytest.raises(ValidationError, match="timeouts out of order"):
        Settings(visibility_timeout_s=100)
    with pytest.raises(ValidationError, match="timeouts out of order"):
        Settings(maximums={"timeout_s": 3000, "output_bytes": 64 * MiB})


def test_default_above_maximum_is_refused() -> None:
    with pytest.raises(ValidationError, match="pids"):
        Settings(defaults={"pids": 512})


def test_settings_come_from_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRLOCK_FLEET", "blue")
    monkeypatch.setenv("AIRLOCK_DEFAULTS__TIMEOUT_S", "5")
    s = Settings()
    assert s.fleet == "blue" and s.defaults.timeout_s == 5


def test_resolve_applies_defaults_and_builds_argv() -> None:
    _, job = resolve({"code": "print(1)"}, Settings())
    assert job.argv == ("python3", "-u", "main.py") and job.files == {"main.py": b"print(1)"}
    assert job.limits.memory_bytes == 4 * 1024**3 and job.image == "airlock/sandbox:latest"


@pytest.mark.parametrize(("spec", "field"), [
    ({"code": "x", "limits": {"timeout_s": -1}}, "limits.timeout_s"),
    ({"code": "x", "limits": {"memory_bytes": 10**15}}, "limits.memory_bytes"),
    ({"code": "x", "limits": {"pids": 0}}, "limits.pids"),
    ({"code": "x", "limits": {"cpus": 64}}, "limits.cpus"),
    ({"code": "x", "profile": "python:3.12-slim"}, "profile"),
    ({"code": "x" * (300 * 1024)}, "code"),
    ({"code": "x", "files": {"../etc/passwd": "x"}}, "files."),
    ({"code": "x", "env": {"AIRLOCK_DATABASE_URL": "x"}}, "env.AIRLOCK_DATABASE_URL"),
    ({"code": "x", "env": {"HTTP_PROXY": "x"}}, "env.HTTP_PROXY"),
    ({"code": "x", "env": {"A": "a\x00b"}}, "env.A"),  # the launcher's frame holds C strings
    ({"code": "x", "files": {"a\x00b": "x"}}, "files."),
    ({"code": "x", "cwd": "/etc"}, "cwd"),
    ({"code": "x", "runtime": "runc"}, "runtime"),
    ({"code": "x", "image": "evil"}, "image"),
    ({}, "code"),
    ({"code": "x", "stdin_b64": "***"}, "stdin_b64"),
])
def test_invalid_jobs_are_refused_naming_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(JobSpecError) as info:
        resolve(spec, Settings())
    assert field in str(info.value)

