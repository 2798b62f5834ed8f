"""Workdir files on a local disk or in a bucket (gs://, as TPU pods share them), written atomically."""

from __future__ import annotations

from etils import epath


def write_atomically(path: epath.PathLike, content: str | bytes) -> None:
    """Writes text or bytes to a temporary file beside `path`, then renames it over `path`: never half-written."""
    path = epath.Path(path)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(content, bytes):
        tmp.write_bytes(content)
    else:
        tmp.write_text(content)
    tmp.replace(path)
