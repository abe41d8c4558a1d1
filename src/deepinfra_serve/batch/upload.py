"""A multipart upload (`POST /v1/openai/files`) read as it arrives: the file part goes to the
store chunk by chunk, so memory stays bounded whatever the file's size; the small fields
(`purpose`, `expires_after[...]`) are kept.

python-multipart (Starlette's own parser) does the parsing, push-style: its callbacks collect
what each part carries between two feeds, and the file's bytes are written out after each.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart import MultipartParser
from python_multipart.multipart import parse_options_header

from ..engine.call import BodyStream
from ..engine.errors import APIError
from ..store.files import Upload

_FIELD_BYTES = 1024  # a form field other than the file


@dataclass
class Form:
    fields: dict[str, str] = field(default_factory=dict)
    filename: str | None = None
    size: int = 0


@dataclass
class _Part:
    """The part being parsed."""

    name: str | None = None
    header: bytes = b""  # the header name being read
    value: bytes = b""  # a small field's value


def _bad(message: str, param: str | None = None) -> APIError:
    return APIError(400, message, param=param, code="invalid_request")


def too_large(limit: int) -> APIError:
    return APIError(413, f"file: larger than {limit} bytes", param="file", code="file_too_large")


async def receive_file(body: BodyStream, upload: Upload, max_bytes: int) -> Form:
    """Parse `body`, writing its `file` part to `upload`; 400 for a body that is not a
    multipart form with one file, 413 past `max_bytes` (the rest of the body is read and
    dropped, so that the answer reaches the client)."""
    kind, options = parse_options_header(body.content_type.encode("latin-1"))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise _bad("Send the file as multipart/form-data")
    form = Form()
    part = _Part()
    headers: dict[bytes, bytes] = {}
    values: list[bytes] = []
    file_data: list[bytes] = []
    files_seen = 0

    def on_part_begin() -> None:
        headers.clear()
        values.clear()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        part.header += data[start:end]

    def on_header_value(data: bytes, start: int, end: int) -> None:
        values.append(data[start:end])

    def on_header_end() -> None:
        headers[part.header.lower()] = b"".join(values)
        part.header = b""
        values.clear()

    def on_headers_finished() -> None:
        nonlocal files_seen
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", "replace")
        filename = disposition.get(b"filename")
        part.name = name
        part.value = b""
        if name == "file":
            files_seen += 1
            form.filename = (filename or b"upload.jsonl").decode("utf-8", "replace")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if part.name == "file":
            if files_seen == 1:
                file_data.append(data[start:end])
        else:
            part.value = (part.value + data[start:end])[: _FIELD_BYTES + 1]

    def on_part_end() -> None:
        name = part.name
        if name is not None and name != "file":
            if len(part.value) > _FIELD_BYTES:
                raise _bad(f"{name}: longer than {_FIELD_BYTES} bytes", name)
            form.fields[name] = part.value.decode("utf-8", "replace")
        part.name = None

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    over = False
    async for chunk in body.chunks:
        if over:
            continue  # read and dropped: the 413 goes out once the body is in
        parser.write(chunk)
        for data in file_data:
            form.size += len(data)
            if form.size > max_bytes:
                over = True
                break
            await upload.write(data)
        file_data.clear()
    parser.finalize()
    if over:
        raise too_large(max_bytes)
    if files_seen != 1:
        raise _bad("file: send exactly one file", "file")
    return form
