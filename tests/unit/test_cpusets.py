"""Dynamic cpusets (workers/cpusets.py): the pure choice and pruning, the host's table on a
temporary path, with a fake list of running containers."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest

from workers.cpusets import CpuSets, Held, choose, cores_for, parse, pruned, render, unchecked


def test_the_kernel_list_format_reads_and_writes() -> None:
    assert parse("0-3,6\n") == (0, 1, 2, 3, 6)
    assert parse("0") == (0,)
    assert parse("") == ()
    assert render([3, 1, 1, 2]) == "1,2,3"
    assert parse(render((0, 5, 7))) == (0, 5, 7)


@pytest.mark.parametrize(("cpus", "cores"), [(0.05, 1), (0.5, 1), (1.0, 1), (1.0000001, 1),
                                              (1.01, 2), (1.5, 2), (2.0, 2), (3.2, 4)])
def test_a_limit_gets_its_cores_rounded_up(cpus: float, cores: int) -> None:
    assert cores_for(cpus) == cores


def test_an_idle_host_gives_the_lowest_cores() -> None:
    assert choose((0, 1, 2, 3), [], 1) == (0,)
    assert choose((0, 1, 2, 3), [], 2.0) == (0, 1)


def test_the_least_loaded_cores_are_chosen() -> None:
    held = [(0,), (0, 1), (2,)]
    assert choose((0, 1, 2, 3), held, 1) == (3,)
    assert choose((0, 1, 2, 3), held, 2) == (1, 3)  # 1 and 2 tie at one set each: the lower
    assert choose((0, 1, 2, 3), held, 3) == (1, 2, 3)


def test_asking_for_more_than_the_host_has_gives_every_core() -> None:
    assert choose((0, 1), [(0,)], 4) == (0, 1)


def test_cores_offline_or_unknown_are_never_chosen_and_do_not_count() -> None:
    assert choose((2, 3), [(0,), (1,), (7,)], 1) == (2,)
    assert choose((0, 2), [(0,)], 1) == (2,)  # core 1 is offline


def test_a_choice_is_deterministic_and_spreads_equal_jobs() -> None:
    held: list[tuple[int, ...]] = []
    for _ in range(8):
        held.append(choose((0, 1, 2, 3), held, 1))
    assert Counter(c for cores in held for c in cores) == {0: 2, 1: 2, 2: 2, 3: 2}
    assert held[:4] == [(0,), (1,), (2,), (3,)]


def _held(name: str, *, engine: str = "e", at: float = 0.0, seen: float = 0.0) -> Held:
    return Held(name, (0,), engine, at, seen)


def test_an_entry_is_checked_once_past_its_grace() -> None:
    table = {"a": _held("a", at=100.0, seen=100.0)}
    assert not unchecked(table, "e", 105.0, 10.0)
    assert unchecked(table, "e", 111.0, 10.0)
    assert not unchecked(table, "other", 111.0, 10.0)  # another engine's: not ours to check


def test_pruning_keeps_the_running_the_young_and_other_engines() -> None:
    table = {"running": _held("running", at=0.0), "young": _held("young", at=95.0),
             "dead": _held("dead", at=0.0, seen=80.0),
             "theirs": _held("theirs", engine="other", at=0.0)}
    out = pruned(table, {"running"}, "e", 100.0, 10.0)
    assert set(out) == {"running", "young", "theirs"}
    assert out["running"].seen == 100.0


def _sets(tmp_path: Path, running: set[str] | None = None, engine: str = "e",
          online: tuple[int, ...] = (0, 1), calls: list[int] | None = None) -> CpuSets:
    def listed() -> set[str]:
        if calls is not None:
            calls.append(1)
        return set() if running is None else running

    return CpuSets(str(tmp_path / "cpusets.json"), engine=engine, running=listed, online=online)


def test_two_jobs_of_one_cpu_get_disjoint_sets_and_release_frees_them(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    assert sets.take("a", 1.0, 0.0) == "0"
    assert sets.take("b", 1.0, 0.0) == "1"
    sets.release("a")
    assert sets.take("c", 1.0, 0.0) == "0"
    assert set(sets.held()) == {"b", "c"}


def test_taking_again_for_the_same_name_replaces_its_set(tmp_path: Path) -> None:
    sets = _sets(tmp_path)
    sets.take("a", 1.0, 0.0)
    sets.take("a", 2.0, 0.0)
    assert {n: h.cpus for n, h in sets.held().items()} == {"a": (0, 1)}


def test_a_dead_workers_sets_go_once_their_containers_are_not_running(tmp_path: Path) -> None:
    """Given two sets taken by a worker that then died, one container still running;
    when another worker takes a set past the grace, the stopped one's core is free again."""
    dead = _sets(tmp_path)
    dead.take("stopped", 1.0, 0.0)
    dead.take("still-running", 1.0, 0.0)
    calls: list[int] = []
    other = _sets(tmp_path, running={"still-running"}, calls=calls)
    assert other.take("next", 1.0, 5.0) == "0"  # within the grace: both still count...
    assert calls == []  # ...and the engine is not asked
    other.release("next")
    assert other.take("next", 1.0, 20.0) == "0"
    assert calls == [1]
    assert set(other.held()) == {"still-running", "next"}
    other.take("after", 1.0, 21.0)
    assert calls == [1]  # just seen running: not asked again within the grace


def test_another_engines_sets_count_and_are_not_pruned(tmp_path: Path) -> None:
    _sets(tmp_path, engine="other").take("theirs", 1.0, 0.0)
    mine = _sets(tmp_path, running=set())
    assert mine.take("mine", 1.0, 100.0) == "1"
    assert "theirs" in mine.held()


def test_concurrent_takers_spread_over_the_cores(tmp_path: Path) -> None:
    got: list[str] = []

    def take(n: int) -> None:
        got.append(_sets(tmp_path, online=(0, 1, 2, 3)).take(f"c{n}", 1.0, 0.0))

    threads = [threading.Thread(target=take, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Counter(got) == {"0": 2, "1": 2, "2": 2, "3": 2}

