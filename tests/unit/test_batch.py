"""Batch input parsing and idempotency keys (pure: no services)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airlock.batch import Batch, BatchItem, csv_row, item_key, load, parse_folder, parse_lines
from config.settings import Settings


@pytest.fixture(scope="module")
def s() -> Settings:
    return Settings(database_url="postgresql+psycopg://nobody@127.0.0.1:1/none")


def lines(*rows: object) -> bytes:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows).encode()


def test_each_valid_line_is_a_job_with_a_key_from_scope_line_and_content(s: Settings) -> None:
    data = lines({"code": "print(1)"}, {"code": "print(2)", "profile": "node"})
    items = parse_lines(data, "scope", s)
    assert [(i.number, i.source, i.valid) for i in items] == [(1, "line 1", True), (2, "line 2", True)]
    assert items[0].spec is not None and items[1].spec is not None
    assert items[0].spec["idempotency_key"] == item_key("scope", "line 1", b'{"code": "print(1)"}')
    assert items[0].spec["idempotency_key"] != items[1].spec["idempotency_key"]
    assert len(items[0].spec["idempotency_key"]) <= 200


def test_keys_are_stable_across_runs_and_differ_by_scope_line_and_content(s: Settings) -> None:
    data = lines({"code": "print(1)"}, {"code": "print(1)"})
    first = [i.spec["idempotency_key"] for i in parse_lines(data, "a", s) if i.spec]
    again = [i.spec["idempotency_key"] for i in parse_lines(data, "a", s) if i.spec]
    other = [i.spec["idempotency_key"] for i in parse_lines(data, "b", s) if i.spec]
    assert first == again  # a re-run submits the same keys
    assert first[0] != first[1]  # identical lines are still two jobs
    assert set(first).isdisjoint(other)
    edited = lines({"code": "print(1)"}, {"code": "print(3)"})
    changed = [i.spec["idempotency_key"] for i in parse_lines(edited, "a", s) if i.spec]
    assert changed[0] == first[0] and changed[1] != first[1]  # only the edited line runs again


def test_key_parts_cannot_run_together() -> None:
    assert item_key("ab", "c", b"") != item_key("a", "bc", b"")


def test_a_line_with_its_own_key_keeps_it(s: Settings) -> None:
    [item] = parse_lines(lines({"code": "1", "idempotency_key": "mine"}), "x", s)
    assert item.spec is not None and item.spec["idempotency_key"] == "mine"


def test_malformed_lines_are_items_with_their_line_number_and_why(s: Settings) -> None:
    data = lines({"code": "print(1)"}, "{not json", "", "# a comment", "[1, 2]",
                 {"code": "x", "limits": {"timeout_s": -1}}, {"code": "x", "nope": 1},
                 {"code": "x", "profile": "evil"}, {"code": "ok"})
    items = parse_lines(data, "s", s)
    got = {i.number: i.error for i in items}
    assert got[1] is None and got[9] is None
    assert 3 not in got and 4 not in got  # blank lines and comments are not jobs
    assert got[2] is not None and got[2].startswith("not JSON")
    assert got[5] == "a job must be a JSON object, not list"
    assert got[6] is not None and "limits.timeout_s" in got[6]
    assert got[7] is not None and "nope" in got[7]
    assert got[8] is not None and "profile" in got[8]


def test_non_utf8_line_is_an_error_not_a_crash(s: Settings) -> None:
    [bad, good] = parse_lines(b'{"code": "\xff"}\n{"code": "1"}', "s", s)
    assert (bad.number, bad.error) == (1, "not valid UTF-8") and good.valid


def test_lines_the_strict_contract_refuses_are_errors_naming_the_field(s: Settings) -> None:
    data = b"\n".join([
        b'{"code": "1", "limits": {"cpus": NaN}}',
        b'{"code": "1", "limits": {"cpus": true}}',
        b'{"code": "1", "limits": {"timeout_s": "5"}}',
        b'{"code": "print(1)\\u0000"}',
        b'{"code": "1", "env": {"A": "\\ud800"}}',
        b'{"code": "1", "argv": ["python3"]}',
        b'{"code": "1", "files": {"a": "1", "a/b": "2"}}',
        b'{"code": "1", "limits": {"pids": ' + b"9" * 5000 + b"}}",
        b"[" * 100_000,
        b'{"code": "ok"}',
    ])
    got = {i.number: i.error for i in parse_lines(data, "s", s)}
    assert got[10] is None
    for number, field in [(1, "limits.cpus"), (2, "limits.cpus"), (3, "limits.timeout_s"),
                          (4, "code"), (5, "env.A"), (6, "argv"), (7, "files.a/b")]:
        assert (got[number] or "").startswith(f"{field}: "), (number, got[number])
    assert (got[8] or "").startswith("not JSON") and (got[9] or "").startswith("not JSON")
    assert all(len(e) < 420 and e.isprintable() for e in got.values() if e)


def test_folder_script_with_a_nul_byte_is_an_error(s: Settings) -> None:
    [item], _ = parse_folder([("x.py", b"print(1)\x00")], "dir", s)
    assert item.error == "code: contains a NUL byte" and item.spec is None


def test_skip_runs_every_valid_line_and_stop_only_those_before_the_first_error() -> None:
    ok = [BatchItem(n, f"line {n}", {"code": "1"}) for n in (1, 2, 4, 5)]
    bad = BatchItem(3, "line 3", None, "not JSON")
    batch = Batch("s", "lines", (ok[0], ok[1], bad, ok[2], ok[3]))
    assert [i.number for i in batch.to_submit("skip")] == [1, 2, 4, 5]
    assert [i.number for i in batch.to_submit("stop")] == [1, 2]
    assert batch.invalid == [bad]


def test_folder_profiles_by_extension_in_name_order(s: Settings) -> None:
    files = [("b.js", b"console.log(1)"), ("a.py", b"print(1)"), ("c.sh", b"echo 1"),
             ("d.c", b"int main(){return 0;}"), ("README.md", b"# hi"), ("e.PY", b"print(2)")]
    items, ignored = parse_folder(files, "dir", s)
    assert [(i.source, i.spec["profile"] if i.spec else None) for i in items] == [
        ("a.py", "python"), ("b.js", "node"), ("c.sh", "shell"), ("d.c", "c"), ("e.PY", "python")]
    assert ignored == ["README.md"]
    assert items[0].spec is not None and items[0].spec["code"] == "print(1)"
    assert items[0].spec["idempotency_key"] == item_key("dir", "a.py", b"print(1)")


def test_folder_script_that_is_not_utf8_is_an_error(s: Settings) -> None:
    [item], _ = parse_folder([("x.py", b"\xff")], "dir", s)
    assert item.error == "not valid UTF-8" and item.spec is None


def test_load_scopes_keys_by_path_or_batch_id(s: Settings, tmp_path: Path) -> None:
    path = tmp_path / "jobs.jsonl"
    path.write_bytes(lines({"code": "print(1)"}))
    by_path = load(path, s)
    assert by_path.scope == str(path.resolve()) and by_path.kind == "lines"
    assert load(path, s).items == by_path.items
    by_id = load(path, s, batch_id="nightly-7")
    assert by_id.items[0].spec != by_path.items[0].spec
    folder = tmp_path / "scripts"
    folder.mkdir()
    (folder / "one.py").write_text("print(1)")
    (folder / "link.py").symlink_to(folder / "one.py")
    batch = load(folder, s)
    assert batch.kind == "folder" and [i.source for i in batch.items] == ["one.py"]


def test_csv_row_has_the_fixed_columns() -> None:
    row = csv_row({"item": 3, "source": "line 3", "verdict": "ok", "extra": 1})
    assert row["item"] == 3 and row["verdict"] == "ok" and "extra" not in row
    assert row["exit_code"] is None


def test_an_items_files_folder_is_a_safe_name() -> None:
    from airlock.batch import BatchItem
    from airlock.batchfiles import item_folder

    assert item_folder(BatchItem(7, "line 7", None)) == "line-7"
    assert item_folder(BatchItem(2, "plot.py", None)) == "plot.py"
    assert item_folder(BatchItem(3, "../../etc", None)) == "etc"
    assert item_folder(BatchItem(4, "..", None)) == "item-4"
    assert item_folder(BatchItem(5, "a\nb\x1b[1m/c", None)) == "a-b-1m-c"
