"""Atomic output: write to a hidden temporary path, then rename it onto the target."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)


class OutputNotWritableError(OSError):
    """An output folder or file cannot be written: the message names the path, the OS error and what to do."""


def check_folder_writable(folder: str | os.PathLike[str]) -> None:
    """Create and remove a temporary file in ``folder``, so an unwritable folder fails before any work.

    Raises:
        OutputNotWritableError: if the file cannot be created or removed, for example because of permissions, a
            read-only or full file system, or an immutable folder.
    """
    folder = Path(folder)
    try:
        handle, name = tempfile.mkstemp(prefix=".tmp-", suffix="-write-check", dir=folder)
    except OSError as error:
        raise _not_writable(folder, error) from error
    os.close(handle)
    try:
        os.unlink(name)
    except OSError as error:
        raise _not_writable(folder, error) from error


def _not_writable(folder: Path, error: OSError) -> OutputNotWritableError:
    reason = error.strerror or str(error)
    return OutputNotWritableError(
        f"Cannot write to folder {folder}: {reason}. Choose another output folder, or give yourself write "
        "permission there (and check that the disk is not full or mounted read-only)."
    )


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], overwrite: bool, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` and move it onto ``path`` when the block succeeds.

    The temporary path lives in the same directory, so the final ``os.replace`` is a rename on one file system.
    Its hidden name ends with the target name (``.tmp-XXXX-out.nii.gz``), so writers that choose the format from
    the extension still work. The caller writes a file there, or fills a directory when ``directory=True`` (for
    example a DICOM series). If the block raises, the temporary file or directory is
    removed and an existing ``path`` is left untouched.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is false.
        IsADirectoryError / NotADirectoryError: if ``path`` exists but is a directory where a file is written,
            or a file where a directory is written.
        FileNotFoundError: if the parent directory of ``path`` does not exist.
        OutputNotWritableError: if the temporary path cannot be created in that directory, or cannot be renamed
            onto ``path`` (the temporary path is removed then).
    """
    target = Path(path)
    parent = target.parent
    _check_target(target, overwrite, directory)
    if not parent.is_dir():
        raise FileNotFoundError(f"Output directory not found: {parent} (create it first, then write {target.name}).")

    prefix = ".tmp-"
    suffix = f"-{target.name}"
    try:
        if directory:
            temporary = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=parent))
        else:
            handle, name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
            os.close(handle)
            temporary = Path(name)
    except OSError as error:
        raise _not_writable(parent, error) from error
    # mkstemp and mkdtemp create private entries (0600 / 0700). Give the output the permissions that a
    # plain open() or mkdir() would give under the current umask.
    _apply_default_permissions(temporary, directory)

    try:
        yield temporary
        if not directory and temporary.exists():
            # Writers that replace the file (safetensors does) bring back private permissions, so apply the
            # default ones again just before the rename.
            _apply_default_permissions(temporary, directory)
        try:
            _move_into_place(temporary, target, overwrite, directory)
        except (FileExistsError, IsADirectoryError, NotADirectoryError):
            raise
        except OSError as error:
            reason = error.strerror or str(error)
            raise OutputNotWritableError(
                f"Cannot replace {target} with the finished output: {reason}. {target} was left as it was; "
                "choose another output name, or make the file and its folder writable."
            ) from error
    except BaseException:
        _remove(temporary)
        raise


def _check_target(target: Path, overwrite: bool, directory: bool) -> None:
    if not (target.exists() or target.is_symlink()):
        return
    if not overwrite:
        raise FileExistsError(
            f"Output already exists: {target}. Pass --overwrite (overwrite=True in Python) to replace it."
        )
    if directory and not target.is_dir():
        raise NotADirectoryError(f"Cannot write a directory over the existing file {target}. Remove it first.")
    if not directory and target.is_dir():
        raise IsADirectoryError(f"Cannot write a file over the existing directory {target}. Remove it first.")


def _move_into_place(temporary: Path, target: Path, overwrite: bool, directory: bool) -> None:
    # Check again: the target may have appeared while the caller was writing.
    _check_target(target, overwrite, directory)
    if directory and target.is_dir() and not target.is_symlink():
        # os.replace cannot replace a non-empty directory, so move the old one aside first and delete it only
        # after the new one is in place.
        old = Path(tempfile.mkdtemp(prefix=".old-", suffix=f"-{target.name}", dir=target.parent))
        os.rmdir(old)
        os.replace(target, old)
        try:
            os.replace(temporary, target)
        except OSError:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
        return
    os.replace(temporary, target)


def _remove(temporary: Path) -> None:
    try:
        if temporary.is_dir() and not temporary.is_symlink():
            shutil.rmtree(temporary)
        else:
            temporary.unlink(missing_ok=True)
    except OSError as error:
        logger.warning("Failed to remove the temporary output %s: %s", temporary, error)


def _apply_default_permissions(temporary: Path, directory: bool) -> None:
    mode = (0o777 if directory else 0o666) & ~_current_umask()
    os.chmod(temporary, mode)


def _current_umask() -> int:
    # Linux reports the umask in /proc. Elsewhere, read it by setting and restoring it, which briefly changes
    # it for the whole process.
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    umask = os.umask(0o022)
    os.umask(umask)
    return umask
