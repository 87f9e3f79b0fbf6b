"""The project's one atomic file write: readers never see a half-written file.

The content goes to a hidden temp file beside the target, which is then renamed over it (a rename
is atomic within one filesystem). The temp file is opened with O_EXCL ("x") rather than mkstemp, so
the result keeps the umask's permissions like any other file the user writes.
"""
from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path


def temp_path_for(target: Path) -> Path:
    """`.name.tmp-<8 hex>` beside `target` (the store's listing hides this pattern)."""
    return target.with_name(f".{target.name}.tmp-{uuid.uuid4().hex[:8]}")


def atomic_write(path: str | os.PathLike, write: Callable[[Path], None] | bytes | str) -> Path:
    """Write `path` atomically: `write` is the content (bytes or text) or a function filling a temp path.

    Creates the parent folders; on any error the temp file is removed and the target left as it was.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(target)
    try:
        if callable(write):
            with open(tmp, "xb"):
                pass  # reserve the name with the umask's mode; `write` then fills it
            write(tmp)
        else:
            data = write.encode() if isinstance(write, str) else bytes(write)
            with open(tmp, "xb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target
