"""Atomic artefact writes and content hashes.

Every artefact (checkpoint, scale table, cache, engine, manifest) goes through these helpers: the
bytes land in a temporary file in the destination folder, are fsync'ed, then renamed over the
target. An interrupted run therefore leaves either the old file or no file, never a truncated one
that looks valid.

Folders (:func:`atomic_directory`) are assembled in a ``.NAME.<token>.staging`` folder. Engine
folders are *versioned*: ``engines/NAME`` is a symlink to a hidden ``.NAME.<token>.version``
folder, and publishing a new version is one rename of a new symlink over it, so a server that
loads NAME during a rebuild finds the old or the new engine, never neither (the issue measured
1,656 failed loads in 88,639 with the former two-rename swap). Writers of one name serialize on
``.NAME.lock`` (flock), and each removes every version but the one it published, so concurrent
rebuilds leave no stale folders. Old versions are removed at once; a reader still inside one
notices the name moved on and loads again (trtopt.repository.load).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from trtopt.errors import UsageError

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

_CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def ensure_writable_dir(path: str | os.PathLike[str], what: str = "output folder") -> Path:
    """Create `path` if needed and prove it is writable, raising UsageError (exit 2) otherwise."""
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {what} {folder}: {exc.strerror or exc}") from exc
    if not folder.is_dir():
        raise UsageError(f"{what} {folder} exists and is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {folder} is not writable")
    return folder


def ensure_file_target(path: str | os.PathLike[str], what: str = "output file") -> Path:
    """`path` as a place to write a file: UsageError (exit 2) when it names an existing folder."""
    target = Path(path)
    if target.is_dir():
        raise UsageError(f"{what} {target} is a folder; expected a file path")
    return target


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _default_mode(is_dir: bool) -> int:
    """The mode open()/mkdir() would have given: mkstemp/mkdtemp create private (0600/0700) entries."""
    return (0o777 if is_dir else 0o666) & ~_current_umask()


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: str | os.PathLike[str], write: Callable[[Any], None], mode: str = "wb") -> Path:
    """Call `write(handle)` on a temp file beside `path`, fsync it, then rename it over `path`."""
    target = ensure_file_target(path)
    folder = ensure_writable_dir(target.parent if str(target.parent) else ".")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=folder)
    try:
        os.chmod(tmp_name, _default_mode(is_dir=False))
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise
    _fsync_dir(folder)
    return target


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    return atomic_write(path, lambda handle: handle.write(data), "wb")


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text), "w")


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


@contextlib.contextmanager
def _exclusive_lock(lock_file: Path) -> Iterator[None]:
    """Serialize writers of one engine name across threads and processes (flock on a lock file)."""
    import fcntl

    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, _default_mode(is_dir=False))
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _new_hidden_folder(target: Path, kind: str) -> Path:
    """A new, empty ``.NAME.<token>.<kind>`` folder beside engine folder `target` (the form hidden_folders finds)."""
    return Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=f".{kind}", dir=target.parent))


def hidden_folders(target: Path, kind: str) -> list[Path]:
    """``.NAME.<token>.<kind>`` folders (kind: version, staging) of engine folder `target`.

    mkdtemp tokens never hold a dot, so the folders of engine "a" never include those of "a.b".
    """
    pattern = re.compile(rf"\.{re.escape(target.name)}\.[A-Za-z0-9_]+\.{re.escape(kind)}")
    return [p for p in target.parent.iterdir() if pattern.fullmatch(p.name) and p.is_dir()]


def lock_file(target: Path) -> Path:
    """The file whose lock writers of engine folder `target` hold while they swap versions."""
    return target.parent / f".{target.name}.lock"


def _publish(staging: Path, target: Path) -> None:
    """Make `staging` the content of `target`: one atomic replacement of the ``target`` symlink.

    Readers resolve ``target`` once and read a complete version folder; an old version is removed
    only after the link has moved on (readers that were still in it retry, see repository.load).
    Writers hold the name's lock, so concurrent replacements serialize and leave no stale versions.
    """
    parent = target.parent
    with _exclusive_lock(lock_file(target)):
        version = _new_hidden_folder(target, "version")
        os.replace(staging, version)
        link = parent / f"{version.name}.link"
        os.symlink(version.name, link)
        try:
            if target.is_dir() and not target.is_symlink():  # a folder written before versioning: move it aside once
                os.replace(target, _new_hidden_folder(target, "version") / "old")
            os.replace(link, target)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(link)
            shutil.rmtree(version, ignore_errors=True)
            raise
        _fsync_dir(parent)
        for old in hidden_folders(target, "version"):
            if old != version:
                shutil.rmtree(old, ignore_errors=True)


def _replace_folder(staging: Path, target: Path) -> None:
    """Rename `staging` over the plain folder `target` (old content moved aside first, then removed).

    Two renames, so a reader may briefly find no `target`: for outputs other programs own the
    layout of (a Triton model repository). Writers serialize on the name's lock; a failed rename
    puts the old folder back, so nothing is lost and no ``.NAME.*.old`` folder stays behind.
    """
    with _exclusive_lock(lock_file(target)):
        retired = None
        if target.exists() or target.is_symlink():
            retired = _new_hidden_folder(target, "old")
            os.replace(target, retired / "old")
        try:
            os.replace(staging, target)
        except BaseException:
            if retired is not None:
                os.replace(retired / "old", target)
            raise
        finally:
            if retired is not None:
                shutil.rmtree(retired, ignore_errors=True)
        _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str], *, versioned: bool = False) -> Iterator[Path]:
    """Yield a staging folder beside `path`; on success it replaces `path` as a whole.

    Everything (engine, manifest, timing cache) is written into the staging folder, and only a
    complete folder ever appears under the final name. With `versioned` (engine folders) ``path``
    is a symbolic link to a hidden version folder (``.NAME.<token>.version``) replaced by one
    rename, so a reader never finds the name missing or half replaced; without it ``path`` stays a
    plain folder (see :func:`_replace_folder`). On any exception the staging folder is removed and
    `path` keeps its old content.
    """
    target = Path(path)
    ensure_writable_dir(target.parent, "output folder")
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a folder")
    staging = _new_hidden_folder(target, "staging")
    os.chmod(staging, _default_mode(is_dir=True))
    try:
        yield staging
        for child in staging.rglob("*"):
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        (_publish if versioned else _replace_folder)(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def read_json(path: str | os.PathLike[str], what: str = "JSON file") -> Any:
    """Read JSON with errors that name the file (UsageError: the user gave a bad path or file)."""
    return _read_parsed(path, what, "JSON", json.loads, json.JSONDecodeError)


def read_toml(path: str | os.PathLike[str], what: str = "TOML file") -> dict[str, Any]:
    """Read TOML (bench suites, serve configs) with errors that name the file, as :func:`read_json`."""
    return _read_parsed(path, what, "TOML", tomllib.loads, tomllib.TOMLDecodeError)


def _read_parsed(path: str | os.PathLike[str], what: str, form: str, parse: Callable[[str], Any],
                 error: type[Exception]) -> Any:
    file = Path(path)
    if not file.is_file():
        raise UsageError(f"{what} not found: {file}")
    try:
        return parse(file.read_text())
    except (error, UnicodeDecodeError) as exc:
        raise UsageError(f"{what} {file} is not valid {form}: {exc}") from exc
