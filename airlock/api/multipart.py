"""A job sent as ``multipart/form-data``: a ``spec`` part (the job's JSON) and file parts, each
a file in /workspace at its part's name (``curl -F in/data.bin=@local.bin``). A part named
``archive``, or sent with a tar type, is the job's tar archive (plain or gzip), unpacked into
/workspace.

The parts become the contract's own fields (``files_b64``, ``archive_b64``): the caps, the
refusals and the spec stored (which an Idempotency-Key compares) are a JSON submission's.
They are read as they stream in and refused as soon as a cap is passed: the body past
AIRLOCK_API_MAX_BODY_BYTES (413), a file past the cap on one file, the count or the total
(422 naming the file), the spec or the archive past the cap on a spec.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from typing import Any

from python_multipart import MultipartParser
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from airlock.api import bodies
from airlock.api.problems import Problem
from base.errors import JobSpecError, preview
from config.sections import Caps

MEDIA = "multipart/form-data"
SPEC, ARCHIVE = "spec", "archive"
TAR_TYPES = frozenset({"application/x-tar", "application/tar", "application/x-gtar",
                       "application/x-compressed-tar"})


def malformed(detail: str) -> Problem:
    return Problem(400, "malformed", "Malformed body", f"multipart/form-data: {detail}")


@dataclass(slots=True)
class Part:
    name: str = ""
    content_type: str = ""
    data: bytearray = field(default_factory=bytearray)

    @property
    def kind(self) -> str:
        if self.name == SPEC:
            return SPEC
        return ARCHIVE if self.name == ARCHIVE or self.content_type in TAR_TYPES else "file"

    @property
    def field(self) -> str:
        """The contract's field this part becomes: a refusal names it as for JSON."""
        return {SPEC: SPEC, ARCHIVE: "archive_b64"}.get(self.kind, f"files_b64.{self.name}")


class Parts:
    """python-multipart's callbacks: each part's headers and bytes, within the caps."""

    def __init__(self, boundary: bytes, caps: Caps) -> None:
        self.caps = caps
        self.parts: list[Part] = []
        self.files_bytes = 0
        self._header = (b"", b"")
        self.ended = False
        self.parser = MultipartParser(boundary, {
            "on_part_begin": lambda: self.parts.append(Part()),
            "on_header_field": lambda d, a, b: self._add_header(d[a:b], b""),
            "on_header_value": lambda d, a, b: self._add_header(b"", d[a:b]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": lambda d, a, b: self._data(d[a:b]),
            "on_end": self._end})

    def _add_header(self, name: bytes, value: bytes) -> None:
        self._header = (self._header[0] + name, self._header[1] + value)

    def _header_end(self) -> None:
        name, value = self._header
        self._header = (b"", b"")
        part = self.parts[-1]
        if name.lower() == b"content-type":
            part.content_type = value.decode("latin-1").split(";")[0].strip().lower()
        elif name.lower() == b"content-disposition":
            _, options = parse_options_header(value)
            if b"name" not in options:
                raise malformed("a part's Content-Disposition names no field")
            try:
                part.name = options[b"name"].decode("utf-8")
            except UnicodeDecodeError as exc:
                raise JobSpecError("files", f"a part's name is not UTF-8: "
                                   f"{preview(options[b'name'].decode('latin-1'), 100)}") from exc

    def _headers_finished(self) -> None:
        part = self.parts[-1]
        if not part.name:
            raise malformed("a part has no Content-Disposition name")
        same = [p for p in self.parts if p.kind == part.kind]
        if part.kind != "file" and len(same) > 1:
            raise JobSpecError(part.field, "is given twice: send one")
        if part.kind == "file" and len(same) > self.caps.files_count:
            raise JobSpecError(part.field, f"is past the cap of {self.caps.files_count} files")

    def _data(self, data: bytes) -> None:
        part = self.parts[-1]
        part.data += data
        c = self.caps
        if part.kind != "file":
            if len(part.data) > c.spec_bytes:
                raise JobSpecError(part.field, f"is over the cap of {c.spec_bytes} bytes")
            return
        self.files_bytes += len(data)
        if len(part.data) > c.file_bytes:
            raise JobSpecError(part.field, f"is over the cap of {c.file_bytes} bytes for one file")
        if self.files_bytes > c.files_bytes:
            raise JobSpecError(part.field, f"takes the files past the cap of {c.files_bytes} bytes")

    def _end(self) -> None:
        self.ended = True

    def write(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except FormParserError as exc:
            raise malformed(str(exc) or type(exc).__name__) from exc

    def finish(self) -> list[Part]:
        try:
            self.parser.finalize()
        except FormParserError as exc:
            raise malformed(str(exc) or type(exc).__name__) from exc
        if not self.ended:
            raise malformed("the body ends before its closing boundary")
        return self.parts


def boundary(content_type: str) -> bytes:
    _, params = parse_options_header(content_type)
    found = params.get(b"boundary")
    if not found or len(found) > 70:  # RFC 2046: 1 to 70 characters
        raise malformed("no boundary (or one over 70 characters) in the Content-Type")
    return found


async def read(request: Request, cap: int, caps: Caps) -> list[Part]:
    """The parts of the body, within ``cap`` (413) and the job's caps (422)."""
    parts = Parts(boundary(request.headers.get("content-type", "")), caps)
    async for chunk in bodies.chunks(request, cap):
        await run_in_threadpool(parts.write, chunk)  # a big body never stalls the loop
    return parts.finish()


def job_of(parts: list[Part]) -> dict[str, Any]:
    """The job the parts make: the spec's JSON, each file part in its ``files_b64`` and the
    archive as its ``archive_b64``. A path given twice (as a part and in the spec) is refused."""
    specs = [p for p in parts if p.kind == SPEC]
    if not specs:
        raise JobSpecError(SPEC, "is missing: a part named spec holds the job's JSON")
    try:
        raw = bodies.parse_json(bytes(specs[0].data))
    except Problem as exc:
        raise Problem(400, exc.slug, exc.title, f"the spec part: {exc.detail}",
                      field=SPEC) from exc
    if not isinstance(raw, dict):
        raise JobSpecError(SPEC, "must be a JSON object: the job")
    job = dict(raw)
    files = [p for p in parts if p.kind == "file"]
    if files:
        job["files_b64"] = _files_b64(job, files)
    for p in parts:
        if p.kind == ARCHIVE:
            if job.get("archive_b64") is not None:
                raise JobSpecError(p.field, "is also in the spec (archive_b64): send one")
            job["archive_b64"] = base64.b64encode(p.data).decode()
    return job


def _files_b64(job: dict[str, Any], files: list[Part]) -> Any:
    given = job.get("files_b64") or {}
    if not isinstance(given, dict):
        return given  # the contract says what is wrong with it
    named = set(given) | set(job["files"] if isinstance(job.get("files"), dict) else ())
    out = dict(given)
    for p in files:
        if p.name in named:
            raise JobSpecError(p.field, "is given twice (as parts, or a part and in the spec)")
        named.add(p.name)
        out[p.name] = base64.b64encode(p.data).decode()
    return out
