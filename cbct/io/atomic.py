"""Atomic outputs: a file or directory appears complete under its final name, or not at all.

Files are written to a temporary name in the destination directory and moved into place with ``os.replace``;
directories are filled under a temporary name and renamed at the end. A crash leaves at most a temporary entry
(named ``.<name>.tmp-*``), never a half-written output under the final name.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile
from collections.abc import Iterator

__all__ = ["atomic_path", "atomic_directory", "replace_directory", "write_text_atomic", "TMP_MARKER"]

TMP_MARKER = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, overwrite: bool = True) -> Iterator[pathlib.Path]:
    """Yield a temporary path next to ``path``; on success move it to ``path``, on error delete it.

    Args:
        path: the final file name.
        overwrite: replace an existing ``path``; ``False`` raises ``FileExistsError`` instead.
    """
    path = pathlib.Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"output exists (pass overwrite=True to replace it): {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}{TMP_MARKER}", dir=path.parent)
    os.close(fd)
    tmp_path = pathlib.Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> pathlib.Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return pathlib.Path(path)


def replace_directory(tmp_dir: pathlib.Path, path: pathlib.Path, *, overwrite: bool) -> None:
    """Rename the finished ``tmp_dir`` to ``path`` (replacing an existing ``path`` when ``overwrite``)."""
    if path.exists():
        if not overwrite:
            raise FileExistsError(f"output directory exists (pass overwrite=True to replace it): {path}")
        old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.old{TMP_MARKER}", dir=path.parent))
        os.replace(path, old / path.name)  # move the old one aside first: the new one then appears in one rename
        os.replace(tmp_dir, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp_dir, path)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike, *, overwrite: bool = False) -> Iterator[pathlib.Path]:
    """Yield a temporary directory next to ``path``; on success rename it to ``path``, on error delete it."""
    path = pathlib.Path(path)
    if not overwrite and path.exists():
        raise FileExistsError(f"output directory exists (pass overwrite=True to replace it): {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}{TMP_MARKER}", dir=path.parent))
    try:
        yield tmp_dir
        os.chmod(tmp_dir, 0o755)  # mkdtemp makes 0700 directories
        replace_directory(tmp_dir, path, overwrite=overwrite)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
