"""The job path's engine calls on the engine's UNIX socket (workers.engine.SocketCalls), against
the real engine: the answers and the errors are docker-py's, so callers cannot tell them apart."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import pytest

from base.errors import DockerUnavailable, InfrastructureError
from config.settings import Settings
from workers import engine
from workers import labels as L

pytestmark = pytest.mark.integration


@pytest.fixture
def api() -> Iterator[docker.APIClient]:
    client = engine.connect(None)
    yield client
    client.close()


def kwargs(name: str, command: list[str]) -> dict[str, Any]:
    return {"image": Settings().profiles["shell"].image, "command": command, "name": name,
            "labels": {L.MANAGED: "true", L.FLEET: f"engine-calls-{name}"},
            "network_disabled": True, "use_config_proxy": False,
            "host_config": {"NetworkMode": "none", "ReadonlyRootfs": True,
                            "LogConfig": {"Type": "none", "Config": {}}}}


def test_a_container_lives_and_goes_through_the_socket(api: docker.APIClient) -> None:
    calls = engine.job_calls(api)
    assert isinstance(calls, engine.SocketCalls) and engine.job_calls(api) is calls
    name = f"airlock-calls-{uuid.uuid4().hex[:8]}"
    cid = calls.create(kwargs(name, ["sh", "-c", "exit 7"]))
    try:
        assert api.inspect_container(cid)["Name"] == f"/{name}"  # the SDK sees what it made
        calls.start(cid)
        assert calls.wait(cid, timeout=30) == 7
        state = calls.inspect(cid)["State"]
        assert (state["Status"], state["ExitCode"], state["OOMKilled"]) == ("exited", 7, False)
        # A second create of the same name: the engine's 409, as docker-py would raise it.
        with pytest.raises(InfrastructureError, match="already in use"), engine.translated("create"):
            calls.create(kwargs(name, ["true"]))
    finally:
        calls.remove(cid)
    with pytest.raises(docker.errors.NotFound):
        calls.inspect(cid)
    with pytest.raises(docker.errors.NotFound):
        calls.remove(cid)  # the runner's remove_container counts this as removed


def test_an_engine_out_of_reach_is_docker_unavailable(api: docker.APIClient,
                                                      tmp_path: Path) -> None:
    calls = engine.SocketCalls(api, str(tmp_path / "no-engine.sock"))
    with pytest.raises(DockerUnavailable), engine.translated("inspect"):
        calls.inspect("nothing")


def test_an_engine_not_on_a_unix_socket_keeps_docker_py() -> None:
    remote = docker.APIClient(base_url="tcp://127.0.0.1:9", version="1.41")
    try:
        assert type(engine.job_calls(remote)) is engine.JobCalls
    finally:
        remote.close()


def test_the_running_list_by_label_is_the_same_through_the_socket(api: docker.APIClient) -> None:
    """Given a running and an exited container of one label, both ways list the running one."""
    calls = engine.job_calls(api)
    tag = uuid.uuid4().hex[:8]
    made = [calls.create(kwargs(f"airlock-calls-{tag}-{n}", command))
            for n, command in enumerate((["sleep", "30"], ["true"]))]
    try:
        for cid in made:
            calls.start(cid)
        calls.wait(made[1], timeout=30)
        label = f"{L.FLEET}=engine-calls-airlock-calls-{tag}-0"
        assert [c["Id"] for c in calls.running(label)] == [made[0]]
        assert [c["Id"] for c in engine.JobCalls(api).running(label)] == [made[0]]
    finally:
        for cid in made:
            calls.remove(cid)
