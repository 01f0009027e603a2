"""The host's slots (workers/slots.py), the reaper's sweep of what a gone container left
(workers/reaper.leftovers) and the check of the jobs' uid range (tasks/startup.uid_clash):
the pure parts, and the table's file on a temporary path."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from base.errors import InfrastructureError
from tasks.startup import uid_clash
from workers.reaper import leftovers
from workers.slots import Slot, Slots, choose_uid


def test_a_uid_is_the_first_free_one_from_the_hint_round_the_range() -> None:
    assert choose_uid([], 100, 4) == 100
    assert choose_uid([100, 101], 100, 4) == 102
    assert choose_uid([102], 100, 4, hint=2) == 103
    assert choose_uid([103], 100, 4, hint=3) == 100  # wraps round
    assert choose_uid([100, 101, 102, 103], 100, 4) is None


def test_concurrent_takers_never_share_a_uid_and_release_gives_it_back(tmp_path: Path) -> None:
    slots = Slots(str(tmp_path / "t.json"), first_uid=5000, count=64, engine="e", fleet="f")
    got: list[int] = []

    def take(n: int) -> None:
        for i in range(8):
            got.append(slots.take(f"airlock-{n}-{i}", 1000.0).uid)

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 64 and len(set(got)) == 64  # all of the range, each once
    with pytest.raises(InfrastructureError, match="every uid"):
        slots.take("airlock-one-too-many", 1000.0)
    slots.release("airlock-3-3")
    assert slots.take("airlock-next", 1000.0).uid not in {s.uid for s in slots.entries()
                                                          if s.name != "airlock-next"}
    assert slots.take("airlock-next", 2000.0).at == 1000.0  # the same name keeps its slot


def slot(name: str, engine: str = "e1", at: float = 0.0) -> Slot:
    return Slot(name, 1, engine, "f", at)


@pytest.mark.parametrize(("case", "swept"), [
    # a slot of this engine, its container gone, past the grace: swept with its resources
    ({"slots": [slot("airlock-a")], "on_disk": {"airlock-a": 0.0}}, ["airlock-a"]),
    # its container is there (any fleet, any state): kept
    ({"slots": [slot("airlock-a")], "live": {"airlock-a"}}, []),
    # too young: its container is being created
    ({"slots": [slot("airlock-a", at=950.0)]}, []),
    # another engine's on this host: never
    ({"slots": [slot("airlock-a", engine="e2")], "on_disk": {"airlock-a": 0.0}}, []),
    # resources with no slot at all, Airlock's name, left alone long enough: swept
    ({"on_disk": {"airlock-old": 0.0}}, ["airlock-old"]),
    ({"on_disk": {"airlock-old": 950.0}}, []),
    # not Airlock's name: never
    ({"on_disk": {"someone-elses": 0.0}}, []),
])
def test_what_a_gone_container_left_is_swept_by_name_only(case: dict[str, object],
                                                           swept: list[str]) -> None:
    assert leftovers(case.get("on_disk", {}), case.get("slots", []),  # type: ignore[arg-type]
                     live=case.get("live", set()), engine="e1", now=1000.0,  # type: ignore[arg-type]
                     grace_s=120.0) == swept


def test_the_jobs_uids_may_clash_with_no_account_nor_subordinate_range() -> None:
    accounts = [("user root", 0, 1), ("user cloudsdk", 1000, 1), ("subuid range of x", 100000, 65536)]
    assert uid_clash(2_000_000_000, 1024, accounts) is None
    said = uid_clash(900, 200, accounts)
    assert said is not None and "cloudsdk" in said and "1000" in said
    said = uid_clash(165000, 100, accounts)
    assert said is not None and "subuid range of x" in said
