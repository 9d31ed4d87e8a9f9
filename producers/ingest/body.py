"""Reading a request body without ever holding more than the size limit."""

from __future__ import annotations

from starlette.requests import Request


class BodyTooLargeError(Exception):
    """The body is over the limit (by its Content-Length, or as it streamed in)."""


async def read_limited(request: Request, limit: int) -> bytes:
    """The whole body, or `BodyTooLargeError` as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLargeError
    chunks: list[bytes] = []
    size = 0
    # A chunked upload (or a lying Content-Length) is cut off as it arrives, not after it is all in memory.
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLargeError
        chunks.append(chunk)
    return b"".join(chunks)
