"""Long jobs that survive interruption: atomic file writes and resuming where a run stopped.

A result file either exists complete or not at all: it is written to a temporary file in the same
folder, flushed to disk, then moved over the final name with ``os.replace`` (atomic on POSIX and
Windows). A rerun skips items whose outputs all exist, so nothing finished is recomputed:

    with jaxcam.jobs.atomic_path("out/cat.png") as tmp:
        fig.savefig(tmp, format="png")             # any writer that takes a path
    todo = jaxcam.jobs.pending(items, lambda it: [f"out/{it}.png"])

A `Manifest` (a small JSON file in the output folder) records the settings of the run, so a
resumed run with different settings is refused instead of mixing results.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from typing import Callable, Iterable, Iterator, List, Sequence, TypeVar

T = TypeVar("T")


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
    """Yield a temporary path beside `path`; on success move it to `path`, on error delete it."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.splitext(path)[1], dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str, data: bytes) -> None:
    """Atomically write `data` to `path`."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)


def clean_temp(folder: str) -> int:
    """Delete temporary files (``.tmp-*``) a killed run left in `folder` and its subfolders; returns how many.

    Call it before a job starts writing (in a multi-process job: on one process, before the others start).
    """
    removed = 0
    for root, _, names in os.walk(folder):
        for name in names:
            if name.startswith(".tmp-"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(root, name))
                    removed += 1
    return removed


def pending(items: Iterable[T], outputs: Callable[[T], Sequence[str]]) -> List[T]:
    """The items for which at least one of ``outputs(item)`` does not exist yet."""
    return [item for item in items if not all(os.path.exists(p) for p in outputs(item))]


def check_writable(folder: str) -> None:
    """Create `folder` if needed and prove a file can be written there; raise a clear error if not."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".probe-"):
            pass
    except OSError as err:
        raise PermissionError(f"cannot write to output folder {folder!r} ({err.strerror or err}); choose "
                              "another folder (e.g. --out /tmp/jaxcam-out)") from err


class Manifest:
    """Settings of a job, stored as JSON in its output folder; a resumed job must match them."""

    def __init__(self, folder: str, name: str = "manifest.json"):
        self.path = os.path.join(folder, name)

    def check_or_write(self, settings: dict, overwrite: bool = False) -> bool:
        """Write `settings`, or check them against an earlier run's. Returns True when resuming.

        Raises ValueError when the folder holds results made with different settings (unless
        `overwrite`, which starts afresh and records the new settings).
        """
        settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        if os.path.exists(self.path) and not overwrite:
            with open(self.path) as f:
                old = json.load(f)
            if old == settings:
                return True
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"{os.path.dirname(self.path)} holds results of a run with other settings (differs in: "
                f"{', '.join(changed)}). Use another output folder, or --overwrite to redo everything."
            )
        write_bytes(self.path, json.dumps(settings, indent=2, sort_keys=True).encode())
        return False
