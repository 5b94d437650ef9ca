"""
Writing files so that a crash never leaves half of one: checkpoints, results files, the downloaded
corpus and its encoded cache all go through atomic_file.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A new file beside path, open for writing, that replaces path once the block ends without error
    (flushed to disk, then renamed): readers never see half a file, and a failure leaves path as it was
    and no temp file behind. It is opened with open(..., "xb"), so it gets the usual permissions (0666
    less the umask), not tempfile's private 0600."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomically(path: Path, content: bytes) -> None:
    """Write bytes to path through atomic_file."""
    with atomic_file(path) as file:
        file.write(content)
