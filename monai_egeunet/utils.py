"""The package's one way of writing a file so that no reader ever sees half of it."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


@contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Opens a temporary file beside ``path`` for writing and, when the block ends without an error, renames it to
    ``path``: a crash or an interrupted run leaves either the old file or the new one, never a truncated one.

    The temporary file is hidden (``.name.XXXX.tmp``) in the destination folder (a rename is atomic only within one
    file system), flushed to disk before the rename, and given the permissions of an ordinary new file (``mkstemp``
    makes it private, which a shared bundle's files must not be). On an error it is removed and the error raised.

    Args:
        path: the destination; its folder is created when missing.
        mode: ``"wb"`` (bytes) or ``"w"`` (text, UTF-8).

    Yields:
        The open temporary file.

    Raises:
        ValueError: for a mode other than ``"wb"`` or ``"w"``.

    Example::

        >>> with atomic_write("models/model.pt") as f:  # doctest: +SKIP
        ...     torch.save(state, f)
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write writes new files: mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8"} if mode == "w" else {})) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
