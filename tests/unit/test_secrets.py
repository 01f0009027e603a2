"""Job secrets, the pure parts: sealing (tasks/secrets.py), the key setting, and what a job
may name (tasks/contract.py)."""

from __future__ import annotations

import base64
import os

import pytest
from pydantic import ValidationError

from base.errors import JobSpecError
from config.settings import Settings
from tasks.contract import resolve
from tasks.secrets import SecretBox, SecretError, checked_value

KEY = os.urandom(32)
VALUE = b"sk-ant-test-" + os.urandom(8).hex().encode()


def test_a_sealed_value_opens_as_its_tenants_secret_of_its_name_only() -> None:
    box = SecretBox(KEY)
    nonce, sealed = box.seal("acme", "ANTHROPIC_API_KEY", VALUE)
    assert VALUE not in sealed and len(nonce) == 12
    assert box.open("acme", "ANTHROPIC_API_KEY", nonce, sealed) == VALUE
    for tenant, name in (("other", "ANTHROPIC_API_KEY"), ("acme", "OTHER_KEY")):
        with pytest.raises(SecretError, match="does not open"):
            box.open(tenant, name, nonce, sealed)  # a row copied elsewhere stays shut
    with pytest.raises(SecretError, match="does not open"):
        SecretBox(os.urandom(32)).open("acme", "ANTHROPIC_API_KEY", nonce, sealed)


def test_each_seal_has_its_own_nonce_and_the_key_id_reveals_nothing() -> None:
    box = SecretBox(KEY)
    assert box.seal("t", "N", VALUE) != box.seal("t", "N", VALUE)
    assert box.key_id == SecretBox(KEY).key_id != SecretBox(os.urandom(32)).key_id
    assert KEY.hex()[:16] != box.key_id and len(box.key_id) == 16


def test_the_key_comes_from_the_settings_and_nothing_opens_without_one() -> None:
    s = Settings(secrets_key=base64.b64encode(KEY).decode())
    assert SecretBox.from_settings(s).key_id == SecretBox(KEY).key_id
    with pytest.raises(SecretError, match="AIRLOCK_SECRETS_KEY"):
        SecretBox.from_settings(Settings())
    assert KEY.hex() not in repr(s) and base64.b64encode(KEY).decode() not in repr(s)


@pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_refused_without_being_quoted(bad: str) -> None:
    with pytest.raises(ValidationError) as info:
        Settings(secrets_key=bad)
    assert bad not in str(info.value)


@pytest.mark.parametrize(("raw", "says"), [
    (b"", "empty"), (b"a\0b", "NUL"), (b"\xff\xfe", "UTF-8"), (b"x" * 17, "over the cap of 16"),
])
def test_a_value_the_environment_cannot_hold_is_refused_unquoted(raw: bytes, says: str) -> None:
    with pytest.raises(SecretError, match=says) as info:
        checked_value(raw, 16)
    assert repr(raw) not in str(info.value)
    assert checked_value(b"token-1", 16) == "token-1"


# --- what a job may name --------------------------------------------------------------------

def test_a_job_names_its_secrets_and_the_spec_holds_names_only() -> None:
    spec, job = resolve({"code": "1", "profile": "agent", "secrets": ["ANTHROPIC_API_KEY"]},
                        Settings())
    assert job.secrets == ("ANTHROPIC_API_KEY",) and job.inner_sandbox is True
    assert spec.model_dump(mode="json", exclude_none=True)["secrets"] == ["ANTHROPIC_API_KEY"]
    assert resolve({"code": "1"}, Settings())[1].secrets == ()
    # Without secrets the stored spec is what workers from before secrets read (rolling upgrades).
    assert "secrets" not in resolve({"code": "1"}, Settings())[0].model_dump(exclude_none=True)


@pytest.mark.parametrize(("secrets", "field", "says"), [
    (["1BAD"], "secrets[0]", "not a variable name"),
    (["A-B"], "secrets[0]", "not a variable name"),
    (["OK", "OK"], "secrets[1]", "twice"),
    (["AIRLOCK_TOKEN"], "secrets[0]", "reserved"),
    (["HTTPS_PROXY"], "secrets[0]", "reserved"),
    (["CLAUDE_CODE_SUBPROCESS_ENV_SCRUB"], "secrets[0]", "reserved"),
    (["IN_ENV"], "secrets[0]", "also in env"),
    ("ANTHROPIC_API_KEY", "secrets", "list"),
    ([{"name": "X"}], "secrets[0]", "string"),
])
def test_a_bad_secret_name_is_refused_naming_the_field(secrets: object, field: str,
                                                       says: str) -> None:
    with pytest.raises(JobSpecError, match=rf"^{field.replace('[', '.').replace(']', '.')}") as info:
        resolve({"code": "1", "secrets": secrets, "env": {"IN_ENV": "x"}}, Settings())
    assert says in str(info.value)


def test_no_more_secrets_than_the_cap() -> None:
    names = [f"S{i}" for i in range(17)]
    with pytest.raises(JobSpecError, match="17 secrets is over the cap of 16"):
        resolve({"code": "1", "secrets": names}, Settings())
    assert len(resolve({"code": "1", "secrets": names[:3]}, Settings(max_secrets=3))[1].secrets) == 3
