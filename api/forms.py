"""A streaming multipart/form-data reader that enforces the upload limit while the body arrives.

FastAPI's `UploadFile`/`Form` parameters let Starlette spool the *whole* body to a temporary file
before the route runs, so a size check there comes after the bytes have landed. Here the request
stream is fed to python-multipart chunk by chunk and reading stops the moment the file part passes
`max_upload_bytes`; a declared Content-Length above the limit is refused before reading anything.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import ClientDisconnect, Request

FILE_FIELD = "video"
MAX_FIELD_BYTES = 64 * 1024  # a text field (params JSON included) never needs more
MAX_PARTS = 16
PART_OVERHEAD_BYTES = MAX_FIELD_BYTES + 8 * 1024  # a text field + its part headers


class FormError(Exception):
    """The body is not a usable multipart form; `status_code` and `detail` say why."""

    def __init__(self, detail: str, status_code: int = 422) -> None:
        super().__init__(detail)
        self.detail = detail
        self.status_code = status_code


@dataclass
class UploadedFile:
    filename: str | None
    content_type: str | None
    data: bytearray = field(default_factory=bytearray)


@dataclass
class ParsedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: list[UploadedFile] = field(default_factory=list)

    @property
    def file(self) -> UploadedFile | None:
        return self.files[0] if self.files else None


class UploadTooLarge(Exception):
    """The file passed the limit; `form` holds what had been read so far (fields sent first)."""

    def __init__(self, limit: int, form: ParsedForm) -> None:
        super().__init__(f"upload above {limit} bytes")
        self.limit = limit
        self.form = form


def human_bytes(n: float) -> str:
    if n < 1024:
        return f"{int(n)} bytes"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024 or unit == "GiB":
            return f"{n:.1f}".removesuffix(".0") + f" {unit}"
    raise AssertionError("unreachable")


def clean_filename(raw: bytes) -> str:
    """The client's file name as text fit to store and show: control characters (NUL, CR, LF, …) become
    '_'. The name is only informational, and Postgres cannot store a NUL in a text column."""
    text = raw.decode("utf-8", "replace")
    return "".join("_" if unicodedata.category(char) == "Cc" else char for char in text)


class _FormCollector:
    """python-multipart callbacks that build a ParsedForm and stop at the size limits."""

    def __init__(self, max_file_bytes: int, max_files: int = 1, max_parts: int = MAX_PARTS) -> None:
        self.max_parts = max_parts
        self.form = ParsedForm()
        self.max_file_bytes = max_file_bytes
        self.max_files = max_files
        self.too_large = False
        self._parts = 0
        self._headers: dict[bytes, bytes] = {}
        self._header_name = b""
        self._header_value = b""
        self._name = ""
        self._text: bytearray | None = None
        self._file: UploadedFile | None = None

    def callbacks(self) -> dict:
        return {
            "on_part_begin": self.on_part_begin,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
        }

    def on_part_begin(self) -> None:
        self._parts += 1
        if self._parts > self.max_parts:
            raise FormError(f"more than {self.max_parts} form fields; send only the documented ones")
        self._headers, self._text, self._file = {}, None, None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        if b"name" not in options:
            raise FormError("a form part has no name in its Content-Disposition header")
        self._name = options[b"name"].decode("utf-8", "replace")
        if self._name in self.form.fields:
            raise FormError(f"form field {self._name!r} is given twice; send it once")
        if self._name == FILE_FIELD and len(self.form.files) >= self.max_files:
            raise FormError(f"form field {self._name!r} is given twice; send it once" if self.max_files == 1
                            else f"more than {self.max_files} {FILE_FIELD!r} files; use a named clip set")
        if self._name == FILE_FIELD:
            # The clip is the `video` field whether or not the client marked it as a file.
            filename = options.get(b"filename")
            content_type = self._headers.get(b"content-type")
            self._file = UploadedFile(
                filename=clean_filename(filename) if filename else None,
                content_type=content_type.decode("latin-1") if content_type else None,
            )
            self.form.files.append(self._file)
        elif b"filename" in options:
            raise FormError(
                f"unexpected file in field {self._name!r}; send the clip as the {FILE_FIELD!r} field"
            )
        else:
            self._text = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._file is not None:
            if len(self._file.data) + len(chunk) > self.max_file_bytes:
                self.too_large = True  # checked after each write(); the rest is never read
                return
            self._file.data.extend(chunk)
        elif self._text is not None:
            if len(self._text) + len(chunk) > MAX_FIELD_BYTES:
                limit = human_bytes(MAX_FIELD_BYTES)
                raise FormError(f"form field {self._name!r} is longer than {limit}")
            self._text.extend(chunk)

    def on_part_end(self) -> None:
        if self._text is not None:
            try:
                self.form.fields[self._name] = self._text.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise FormError(f"form field {self._name!r} is not valid UTF-8 text") from exc
        self._text, self._file = None, None


def _boundary(request: Request) -> bytes:
    content_type = request.headers.get("content-type", "")
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        raise FormError(
            f"send the job as multipart/form-data (got {content_type or 'no Content-Type'}), "
            f"e.g. curl -F {FILE_FIELD}=@clip.mp4 -F max_queries=10000 …",
            status_code=415,
        )
    if b"boundary" not in options:
        raise FormError("the multipart Content-Type has no boundary", status_code=400)
    return options[b"boundary"]


def _declared_length(request: Request) -> int | None:
    try:
        return int(request.headers["content-length"])
    except (KeyError, ValueError):
        return None


async def read_multipart(request: Request, max_file_bytes: int, max_files: int = 1,
                         max_parts: int = MAX_PARTS) -> ParsedForm:
    """Read the form, raising UploadTooLarge as soon as a file passes `max_file_bytes`."""
    boundary = _boundary(request)
    declared = _declared_length(request)
    if declared is not None and declared > max_files * max_file_bytes + max_parts * PART_OVERHEAD_BYTES:
        raise UploadTooLarge(max_file_bytes, ParsedForm())
    collector = _FormCollector(max_file_bytes, max_files, max_parts)
    parser = MultipartParser(boundary, collector.callbacks())
    try:
        async for chunk in request.stream():
            parser.write(chunk)
            if collector.too_large:
                raise UploadTooLarge(max_file_bytes, collector.form)
        parser.finalize()
    except FormParserError as exc:
        raise FormError(f"malformed multipart body ({exc}); let an HTTP client build the form") from exc
    except ClientDisconnect as exc:
        raise FormError("the client disconnected before the upload ended", status_code=400) from exc
    return collector.form
