"""Write output folders so that a failed command leaves nothing half-written behind."""

import contextlib
import logging
import pathlib
import shutil
import tempfile

from ids_edge.errors import IdsEdgeError

logger = logging.getLogger(__name__)

MARKER_FILES = ("run.json", "export.json", "bundle.json", "firmware.json")
"""Files that mark a folder as ids-edge output, which a later successful command may replace."""


@contextlib.contextmanager
def output_dir(path):
    """Yield a temporary sibling folder that replaces ``path`` only when the block succeeds.

    On an exception the temporary folder is deleted and ``path`` is left as it was. An existing
    ``path`` is replaced only if it is empty or contains ids-edge output (one of :data:`MARKER_FILES`).

    Raises:
        IdsEdgeError: ``path`` is a file, or a non-empty folder that ids-edge did not write.
    """
    path = pathlib.Path(path)
    if path.exists():
        if not path.is_dir():
            raise IdsEdgeError(f"Output path {path} is a file. Choose a folder path with --out.")
        if any(path.iterdir()) and not any((path / marker).exists() for marker in MARKER_FILES):
            raise IdsEdgeError(
                f"Output folder {path} is not empty and was not written by ids-edge, so it is left alone. "
                "Choose a new or empty folder with --out."
            )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise IdsEdgeError(f"Cannot create the parent folder of {path}: {error.strerror}.") from None

    temporary = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield temporary
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
