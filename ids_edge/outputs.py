"""Write output folders so that a failed command leaves nothing half-written behind."""

import contextlib
import logging
import os
import pathlib
import shutil
import tempfile

from ids_edge.errors import IdsEdgeError

logger = logging.getLogger(__name__)

MARKER_FILES = ("run.json", "export.json", "bundle.json", "firmware.json", "bench.json", "coral.json")
"""Files that mark a folder as ids-edge output, which a later successful command may replace."""

MANIFEST_FILE = ".ids-edge-outputs"
"""Hidden file listing the entries ids-edge wrote into an output folder, one name a line."""


def check_output_dir(path, marker=None):
    """Check that ``path`` may become an output folder, before any slow work starts.

    ``path`` may be missing, an empty folder, or output of the same kind: a folder that contains
    ``marker`` (one of :data:`MARKER_FILES`), or any of them when ``marker`` is None. So an
    export never replaces the run directory it reads.

    Raises:
        IdsEdgeError: ``path`` is a file, or a non-empty folder of other content.
    """
    path = pathlib.Path(path)
    markers = MARKER_FILES if marker is None else (marker,)
    if str(path) in ("", "."):
        raise IdsEdgeError("Invalid output path: --out is empty or the current folder. Name a folder to write to.")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise IdsEdgeError(f"Cannot write {path}: {parent} is a file, not a folder. Choose another --out.")
    if not path.exists():
        return
    if not path.is_dir():
        raise IdsEdgeError(f"Output path {path} is a file. Choose a folder path with --out.")
    if any(path.iterdir()) and not any((path / name).exists() for name in markers):
        raise IdsEdgeError(
            f"Output folder {path} is not empty and was not written by ids-edge as this kind of output "
            f"({markers[0]} is missing), so it is left alone. Choose a new or empty folder with --out."
        )

    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        written = set(manifest.read_text(encoding="utf-8").splitlines()) | {MANIFEST_FILE}
        foreign = sorted(entry.name for entry in path.iterdir() if entry.name not in written)
        if foreign:
            raise IdsEdgeError(
                f"Output folder {path} contains {', '.join(foreign[:5])}{' and more' if len(foreign) > 5 else ''}, "
                "which ids-edge did not write there and would delete on replacing the folder. Move them out, "
                "or choose another folder with --out."
            )


@contextlib.contextmanager
def output_dir(path, marker=None):
    """Yield a temporary sibling folder that replaces ``path`` only when the block succeeds.

    On an exception the temporary folder is deleted and ``path`` is left as it was. Which
    existing folders may be replaced is decided by :func:`check_output_dir`.

    Raises:
        IdsEdgeError: ``path`` may not be replaced, or its parent folder cannot be created.
    """
    path = pathlib.Path(path)
    check_output_dir(path, marker)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise IdsEdgeError(f"Cannot create the parent folder of {path}: {error.strerror}.") from None

    try:
        temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    except OSError as error:
        raise IdsEdgeError(f"Cannot write into {path.parent}: {error.strerror}. Choose another --out.") from None
    umask = os.umask(0)
    os.umask(umask)
    temporary.chmod(0o777 & ~umask)  # mkdtemp makes the folder private (0700); outputs are ordinary folders
    try:
        yield temporary
        names = sorted(entry.name for entry in temporary.iterdir())
        (temporary / MANIFEST_FILE).write_text("".join(f"{name}\n" for name in names), encoding="utf-8")
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise

    backup = None
    if path.exists():
        backup = path.with_name(f".{path.name}.previous")
        shutil.rmtree(backup, ignore_errors=True)
        path.rename(backup)
    temporary.rename(path)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)
    logger.debug("Wrote %s", path)
