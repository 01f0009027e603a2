"""The collect globs (workers/globs.py): what a pattern names, on bytes; pure."""

from __future__ import annotations

import pytest

from workers.globs import Globs, problem


def walk(globs: Globs, tree: dict[bytes, object]) -> tuple[set[bytes], set[bytes]]:
    """(files matched, folders named by a literal pattern) in a tree of dicts (folders) and
    None (files), as the collector walks it: only where some pattern leads."""
    files: set[bytes] = set()
    folders: set[bytes] = set()

    def visit(node: dict[bytes, object], states: frozenset[tuple[int, int]], at: bytes) -> None:
        for name, child in node.items():
            step = globs.step(states, name)
            path = at + name
            if isinstance(child, dict):
                if step.matched and step.literal:
                    folders.add(path)
                if step.inner:
                    visit(child, step.inner, path + b"/")
            elif step.matched:
                files.add(path)

    visit(tree, globs.start(), b"")
    return files, folders


TREE: dict[bytes, object] = {
    b"report.pdf": None, b".hidden": None, b"main.py": None,
    b"out": {b"a.csv": None, b"b.txt": None, b"deep": {b"c.csv": None, b"d": {b"e.csv": None}}},
    b"img": {b"x.png": None, b"y.PNG": None},
    b"bad\xffname\n.png": None,
}


@pytest.mark.parametrize(("patterns", "want"), [
    (["report.pdf"], {b"report.pdf"}),
    (["out/**"], {b"out/a.csv", b"out/b.txt", b"out/deep/c.csv", b"out/deep/d/e.csv"}),
    (["out/*.csv"], {b"out/a.csv"}),
    (["out/**/*.csv"], {b"out/a.csv", b"out/deep/c.csv", b"out/deep/d/e.csv"}),
    (["**/*.png"], {b"img/x.png", b"bad\xffname\n.png"}),
    (["*"], {b"report.pdf", b".hidden", b"main.py", b"bad\xffname\n.png"}),
    (["**"], {b"report.pdf", b".hidden", b"main.py", b"out/a.csv", b"out/b.txt",
              b"out/deep/c.csv", b"out/deep/d/e.csv", b"img/x.png", b"img/y.PNG",
              b"bad\xffname\n.png"}),
    (["img/[xy].*"], {b"img/x.png", b"img/y.PNG"}),
    (["out/deep/?.csv", "main.py"], {b"out/deep/c.csv", b"main.py"}),
    (["nothing/**", "missing.txt"], set()),
])
def test_a_pattern_names_exactly_its_files(patterns: list[str], want: set[bytes]) -> None:
    assert walk(Globs.of(patterns), TREE)[0] == want


def test_a_folder_named_literally_is_reported_and_a_wildcard_one_is_not() -> None:
    assert walk(Globs.of(["out"]), TREE)[1] == {b"out"}
    assert walk(Globs.of(["o*"]), TREE)[1] == set()


def test_the_walk_goes_only_where_a_pattern_leads() -> None:
    globs = Globs.of(["out/deep/c.csv"])
    step = globs.step(globs.start(), b"img")
    assert not step.wanted
    into_out = globs.step(globs.start(), b"out").inner
    assert not globs.step(into_out, b"other").wanted
    assert globs.step(into_out, b"deep").inner


@pytest.mark.parametrize(("pattern", "says"), [
    ("/etc/passwd", "absolute"),
    ("../x", "'..'"),
    ("out/../../etc", "'..'"),
    ("a//b", "empty"),
    ("./a", "'.'"),
    ("a/", "empty"),
    ("", "empty"),
    ("x" * 256, "over 255"),
    ("a/" * 600, "over 1024"),
    ("a**/b", "whole part"),
])
def test_a_pattern_that_leaves_the_workspace_or_is_malformed_is_refused(pattern: str,
                                                                       says: str) -> None:
    why = problem(pattern)
    assert why is not None and says in why, why
    with pytest.raises(ValueError):
        Globs.of([pattern])


def test_fine_patterns_have_no_problem() -> None:
    for pattern in ("out/**", "report.pdf", "**/*.png", "a b/c [1].txt", "é/*"):
        assert problem(pattern) is None
