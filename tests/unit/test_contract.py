"""The strict job contract (issue 15, ATTACKS.md A38): each class of bad input is refused with
a JobSpecError naming the field, in one short printable line; pure, no services."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from base.errors import JobSpecError, preview
from config.settings import Settings
from tasks.contract import JobSpec, resolve
from tests.bad_jobs import (
    CLASSES,
    COLLIDING_PATHS,
    CONFLICTS,
    INF,
    NAN,
    NON_FINITE,
    NOT_NUMBERS,
    NUL,
    OVER_A_CAP,
    SURROGATES,
    KiB,
    MiB,
    argv_job,
    job,
)

S = Settings()


def refused(spec: object, s: Settings = S) -> JobSpecError:
    with pytest.raises(JobSpecError) as info:
        resolve(spec, s)
    return info.value


@pytest.mark.parametrize(("spec", "field"), [pytest.param(spec, field, id=f"{name}-{i}")
                                             for name, cases in CLASSES.items()
                                             for i, (spec, field) in enumerate(cases)])
def test_bad_input_is_refused_naming_the_field_in_one_short_printable_line(
        spec: object, field: str) -> None:
    error = refused(spec)
    assert error.field == field, str(error)
    text = str(error)
    assert text.startswith(f"{field}: ") and len(text) < 420
    assert text.isprintable(), text  # no newline, escape, NUL or lone surrogate


@pytest.mark.parametrize(("spec", "says"), [
    (NON_FINITE[0][0], "finite number"),
    (NOT_NUMBERS[0][0], "not a boolean"),
    (NOT_NUMBERS[3][0], "not a string"),
    (NUL[0][0], "NUL byte"),
    (SURROGATES[0][0], "not valid Unicode"),
    (OVER_A_CAP[0][0], "16385 bytes is over the cap of 16384"),
    (CONFLICTS[0][0], "give code or argv, not both"),
    (CONFLICTS[2][0], "nothing to run"),
    (CONFLICTS[3][0], "nothing to run"),
    (CONFLICTS[4][0], "is empty"),
    (COLLIDING_PATHS[0][0], "needs a folder where files.a is a file"),
    (COLLIDING_PATHS[2][0], "same path as code"),
    (COLLIDING_PATHS[5][0], "same path as files.a"),
])
def test_a_refusal_says_what_is_wrong(spec: object, says: str) -> None:
    assert says in str(refused(spec))


def test_a_refusal_never_echoes_a_huge_value_or_raw_control_bytes() -> None:
    secret_blob = "\x1b[8m" + "A" * MiB
    for spec in (job(profile=secret_blob), job(files={secret_blob[:300]: "x"}),
                 job(env={secret_blob[:100]: "x"}), argv_job(secret_blob)):
        text = str(refused(spec))
        assert "\x1b" not in text and "A" * 100 not in text, text


def test_caps_come_from_the_settings_by_their_flat_names() -> None:
    s = Settings(max_env_value_bytes=4, max_argv_bytes=10, max_spec_bytes=300)
    assert (s.caps.env_value_bytes, s.caps.argv_bytes, s.caps.spec_bytes) == (4, 10, 300)
    resolve(job(env={"A": "1234"}), s)
    assert refused(job(env={"A": "12345"}), s).field == "env.A"
    resolve(argv_job("echo", "1234"), s)  # 5 + 5 bytes with their NULs
    assert refused(argv_job("echo", "12345"), s).field == "argv"
    assert refused(job(label="x" * 200, idempotency_key="k" * 200), s).field == "job"


def test_what_is_fine_stays_fine() -> None:
    _, done = resolve(job(limits={"timeout_s": 5, "cpus": 1}), S)  # ints where floats are meant
    assert (done.limits.timeout_s, done.limits.cpus) == (5.0, 1.0)
    _, done = resolve(argv_job("echo", "", "x"), S)  # an empty argument (not the program)
    assert done.argv == ("echo", "", "x")
    _, done = resolve(job(files={"a/b": "1", "a/c": "2", "ab": "3"}, env={"E": ""}), S)
    assert set(done.files) == {"main.py", "a/b", "a/c", "ab"} and done.env == {"E": ""}
    resolve(job(env={"BIG": "x" * 16 * KiB}), S)  # at the cap exactly
    resolve({"code": "x" * 256 * KiB, "stdin": "x" * 4 * MiB, "files": {"a": "x" * 4 * MiB}}, S)


def test_binary_files_and_stdin_go_in_base64_and_may_hold_nul() -> None:
    blob = bytes(range(256)) * 4
    spec, done = resolve(job(files_b64={"bin/data": base64.b64encode(blob).decode()},
                             files={"t.txt": "text"}, stdin_b64=base64.b64encode(b"\x00\xff").decode()),
                         S)
    assert done.files["bin/data"] == blob and done.files["t.txt"] == b"text"
    assert done.stdin == b"\x00\xff"
    stored = spec.model_dump(mode="json", exclude_none=True)
    assert "\x00" not in json.dumps(stored)  # as PostgreSQL keeps it
    _, again = resolve(stored, S)  # the worker resolves the stored spec: the same job
    assert again == done


def test_a_job_spec_made_without_validation_is_validated_again() -> None:
    sneaky = JobSpec.model_construct(code="print(1)\x00")
    assert refused(sneaky).field == "code"


HOSTILE: list[object] = [None, True, 0, -1, 1.5, NAN, INF, 10**30, "", "x\x00", "\ud800", "5",
                         "x" * 300, [], [""], ["\x00"], {}, {"": ""}, {"\ud800": 1}, {"a": None}]


@pytest.mark.parametrize("name", [*sorted(JobSpec.model_fields), "limits.timeout_s", "limits.cpus",
                                  "limits.memory_bytes", "limits.pids"])
def test_any_value_in_any_field_resolves_or_is_a_job_spec_error(name: str) -> None:
    for value in HOSTILE:
        spec: dict[str, Any] = {"code": "1"} if name != "code" else {}
        if name.startswith("limits."):
            spec["limits"] = {name.split(".")[1]: value}
        else:
            spec[name] = value
        try:
            resolve(spec, S)
        except JobSpecError as exc:
            assert str(exc).isprintable() and len(str(exc)) < 420


def test_the_schema_declares_the_contract() -> None:
    """An HTTP API generates its schema from JobSpec: the strictness shows there."""
    schema = JobSpec.model_json_schema()
    limits = schema["$defs"]["JobLimits"]["properties"]
    cpus = limits["cpus"]["anyOf"][0]
    assert cpus["type"] == "number" and cpus["exclusiveMinimum"] == 0
    assert limits["pids"]["anyOf"][0]["type"] == "integer"
    props = schema["properties"]
    assert props["code"]["anyOf"][0]["pattern"] == "^[^\\x00]*$"
    assert props["argv"]["anyOf"][0]["items"]["pattern"] == "^[^\\x00]*$"
    assert list(props["env"]["patternProperties"]) == ["^[A-Za-z_][A-Za-z0-9_]{0,127}$"]
    assert props["files_b64"]["maxProperties"] == 65535  # the fleet's cap is a setting
    assert props["collect"]["maxItems"] == 64
    assert schema["additionalProperties"] is False


def test_preview_keeps_one_short_printable_line() -> None:
    assert preview("a\x00b\nc\x1b[1m\ud800") == "a\\x00b\\nc\\x1b[1m\\ud800"
    assert preview("x" * 100, 10) == "x" * 10 + "…"
    assert preview("é ok") == "é ok"


@pytest.mark.parametrize(("pattern", "says"), [
    ("../etc/passwd", "must not go up"), ("out/../../x", "must not go up"),
    ("/etc/shadow", "absolute"), ("a//b", "empty"), ("a**", "whole part")])
def test_a_collect_glob_out_of_the_workspace_is_refused_at_submit(pattern: str, says: str) -> None:
    error = refused({"code": "1", "collect": ["out/**", pattern]})
    assert error.field == "collect[1]" and says in str(error), str(error)


def test_collect_is_kept_in_order_once_each_and_refused_where_volumes_are_in_memory() -> None:
    _, done = resolve({"code": "1", "collect": ["out/**", "report.pdf", "out/**"]}, S)
    assert done.collect == ("out/**", "report.pdf")
    error = refused({"code": "1", "collect": ["out/**"]}, Settings(storage="tmpfs"))
    assert error.field == "collect" and "AIRLOCK_STORAGE=tmpfs" in str(error)
    resolve({"code": "1"}, Settings(storage="tmpfs"))  # without collect: fine
