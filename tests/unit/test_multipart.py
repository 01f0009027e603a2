"""A job sent as multipart/form-data becomes the contract's own fields, within its caps
(airlock/api/multipart.py); no server needed."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest

from airlock.api.multipart import Part, Parts, boundary, job_of
from airlock.api.problems import Problem
from base.errors import JobSpecError
from config.sections import Caps

SPEC = ("spec", (None, json.dumps({"code": "print(1)"}), "application/json"))


def parse(files: list[tuple[str, Any]], caps: Caps | None = None, cut: int = 0,
          step: int = 5) -> list[Part]:
    request = httpx.Request("POST", "http://x/", files=files)
    body = request.read()[:len(request.read()) - cut]
    parts = Parts(boundary(request.headers["content-type"]), caps or Caps())
    for at in range(0, len(body), step):  # in small chunks: a part's bytes cross them
        parts.write(body[at:at + step])
    return parts.finish()


def test_file_parts_and_an_archive_become_files_b64_and_archive_b64() -> None:
    job = job_of(parse([SPEC, ("in/a.bin", ("local.bin", b"\x00\xff\n")),
                        ("archive", ("x.tgz", b"TAR", "application/gzip")),
                        ("notes.txt", (None, "text"))]))
    assert job == {"code": "print(1)", "archive_b64": base64.b64encode(b"TAR").decode(),
                   "files_b64": {"in/a.bin": base64.b64encode(b"\x00\xff\n").decode(),
                                 "notes.txt": base64.b64encode(b"text").decode()}}


def test_a_tar_typed_part_is_the_archive_whatever_its_name() -> None:
    job = job_of(parse([SPEC, ("src.tar", ("src.tar", b"T", "application/x-tar"))]))
    assert job["archive_b64"] == "VA==" and "files_b64" not in job


@pytest.mark.parametrize(("files", "caps", "field", "words"), [
    ([("big.bin", ("b", b"x" * 11))], Caps(max_file_bytes=10), "files_b64.big.bin", "one file"),
    ([("a", ("a", b"x" * 6)), ("b", ("b", b"x" * 6))], Caps(max_files_bytes=10), "files_b64.b",
     "past the cap of 10 bytes"),
    ([("a", ("a", b"x")), ("b", ("b", b"x"))], Caps(max_files=1), "files_b64.b", "1 files"),
    ([SPEC], None, "spec", "given twice"),
    ([("archive", ("a", b"1")), ("archive", ("b", b"2"))], None, "archive_b64", "given twice"),
])
def test_a_cap_passed_is_refused_naming_the_part(files: list[tuple[str, Any]], caps: Caps | None,
                                                 field: str, words: str) -> None:
    with pytest.raises(JobSpecError) as refused:
        parse([SPEC, *files], caps)
    assert refused.value.field == field and words in str(refused.value)


@pytest.mark.parametrize(("files", "field"), [
    ([SPEC, ("in/a", ("a", b"1")), ("in/a", ("a", b"2"))], "files_b64.in/a"),
    ([("spec", (None, '{"code": "1", "files": {"x": "y"}}')), ("x", ("x", b"2"))], "files_b64.x"),
    ([("spec", (None, '{"code": "1", "archive_b64": ""}')), ("archive", ("x", b"2"))], "archive_b64"),
    ([("spec", (None, '["a list"]'))], "spec"),
    ([("f", ("f", b"no spec"))], "spec"),
])
def test_a_job_the_parts_cannot_make_names_the_field(files: list[tuple[str, Any]],
                                                     field: str) -> None:
    with pytest.raises(JobSpecError) as refused:
        job_of(parse(files))
    assert refused.value.field == field


def test_a_spec_that_is_not_json_is_400_naming_it() -> None:
    with pytest.raises(Problem) as refused:
        job_of(parse([("spec", (None, "{nope"))]))
    assert (refused.value.status, refused.value.field) == (400, "spec")


def test_a_body_cut_short_or_without_a_boundary_is_400() -> None:
    with pytest.raises(Problem) as cut:
        parse([SPEC, ("a", ("a", b"123"))], cut=12)
    assert cut.value.status == 400 and "closing boundary" in cut.value.detail
    for content_type in ("multipart/form-data", "multipart/form-data; boundary=" + "x" * 71):
        with pytest.raises(Problem):
            boundary(content_type)
    parts = Parts(b"abc", Caps())
    with pytest.raises(Problem):
        parts.write(b"--abc\r\nContent-Type: text/plain\r\n\r\nx\r\n--abc--\r\n")  # no name
