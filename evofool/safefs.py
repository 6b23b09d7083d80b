"""Run folders and galleries are closed rooms: the file primitives every evofool writer uses.

What evofool writes in a run folder or gallery is a regular file that it created there
itself: a temp file opened with ``O_CREAT|O_EXCL|O_NOFOLLOW`` (so never an existing file,
never through a symbolic link), filled, then renamed over the target. A rename replaces
the directory entry, not the file it named, so a target that is a link or a hard link to
someone else's file is never written into. The folders between the root (the run folder
or gallery, which may itself be reached through a link the user chose) and the file are
opened one by one with ``O_NOFOLLOW``, so a planted ``champions/`` or ``gallery/`` link
is refused too. Every refusal is a one-line ``EvofoolError`` naming the path.

What evofool reads back (checkpoints, JSON, the log, champion PNGs) must be a regular
file below a size bound: it is opened with ``O_NOFOLLOW|O_NONBLOCK`` and checked with
``fstat`` before a byte is read, so a FIFO, a device or a link to ``/dev/zero`` is
answered at once instead of hanging or filling memory.

One writer per folder: ``lock_folder`` holds an ``flock`` on ``FOLDER/.lock`` (which holds
the owner's pid as text) that the kernel drops when the process dies.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import stat
import time
from pathlib import Path, PurePosixPath

from evofool.errors import EvofoolError

# --- size bounds: the most a file evofool wrote can hold; anything larger is refused ----
# The largest archive is 1,000 classes × 3×224×224 uint8 images ≈ 150 MB, plus genomes
# (CPPN networks, step histories) of the same order: 4 GiB leaves a wide margin.
CHECKPOINT_LIMIT = 4 << 30
# config.json, champions.json, summary.json, manifest.json: a few hundred bytes per class.
JSON_LIMIT = 64 << 20
# About 300 bytes per generation: 1 GiB is millions of generations.
LOG_LIMIT = 1 << 30
# A champion PNG of a 3×1024×1024 image is at most ~3 MB.
PNG_LIMIT = 64 << 20
# A lock file holds a pid and a newline.
LOCK_LIMIT = 64

LOCK = ".lock"

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 24


# --- refusals ------------------------------------------------------------------------------
def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISREG(mode):
        return "a file"
    return "not a regular file"


def _refusal(path: Path, mode: int) -> EvofoolError:
    """The one-line error for a path that is not a regular file (or, for folders, not a folder)."""
    if stat.S_ISLNK(mode):
        return EvofoolError(f"{path} is a symbolic link; evofool reads and writes only regular files it "
                            f"made in a run folder or gallery (remove the link)")
    return EvofoolError(f"{path} is {_kind(mode)}, not a regular file")


def _with_filename(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` (``os.write`` errors name no file); same errno, same subclass."""
    if getattr(exc, "filename", None) == str(path):
        return exc
    return OSError(exc.errno, exc.strerror or str(exc), str(path))


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _explain(exc: OSError, path: Path, dir_fd: int, name: str) -> Exception:
    """Why opening ``name`` failed: a link or a non-regular file is a refusal, the rest an OSError."""
    if exc.errno != errno.ENOENT:
        st = _lstat_at(dir_fd, name)
        if st is not None and not stat.S_ISREG(st.st_mode) and not stat.S_ISDIR(st.st_mode):
            return _refusal(path, st.st_mode)
        if st is not None and stat.S_ISDIR(st.st_mode) and exc.errno == errno.EISDIR:
            return _refusal(path, st.st_mode)
    return _with_filename(exc, path)


# --- walking below a root --------------------------------------------------------------------
def _split(path: str | Path, root: str | Path | None) -> tuple[Path, Path, tuple[str, ...], str]:
    """``(path, root, folders between them, file name)``; ``root`` defaults to the parent."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise ValueError(f"{path} is not below {root}") from None
    if not parts or ".." in parts:
        raise ValueError(f"{path} is not a file below {root}")
    return path, root, parts[:-1], parts[-1]


def _open_dir(root: Path, parts: tuple[str, ...], create: bool = False) -> int:
    """A descriptor of ``root/parts...``: each part a real folder, never a link (made if ``create``)."""
    try:
        fd = os.open(root, _DIR_FLAGS)  # the root itself may be a link the user chose
    except OSError as exc:
        raise _with_filename(exc, root) from None
    where = root
    try:
        for part in parts:
            where = where / part
            if create:
                try:
                    os.mkdir(part, 0o777, dir_fd=fd)
                except FileExistsError:
                    pass
            try:
                child = os.open(part, _DIR_FLAGS | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as exc:
                st = _lstat_at(fd, part)
                if st is not None and not stat.S_ISDIR(st.st_mode):
                    if stat.S_ISLNK(st.st_mode):
                        raise EvofoolError(f"{where} is a symbolic link; evofool writes only into folders "
                                           f"it made in a run folder or gallery (remove the link)") from None
                    raise EvofoolError(f"{where} is {_kind(st.st_mode)}, not a folder") from None
                raise _with_filename(exc, where) from None
            os.close(fd)
            fd = child
        return fd
    except BaseException:
        os.close(fd)
        raise


def _open_parent(path, root) -> tuple[Path, int, str]:
    path, root, parents, name = _split(path, root)
    return path, _open_dir(root, parents), name


def make_dir(path: str | Path, root: str | Path | None = None) -> Path:
    """Creates ``path`` (and the folders between ``root`` and it) where missing; none may be a link."""
    path = Path(path)
    root = Path(root) if root is not None else path.parent
    parts = path.relative_to(root).parts
    if ".." in parts:
        raise ValueError(f"{path} is not below {root}")
    os.close(_open_dir(root, parts, create=True))
    return path


def inside(root: str | Path, rel: str, what: str = "a file") -> Path:
    """``root/rel`` for a relative path read from a file (champions.json, a manifest).

    Raises:
        EvofoolError: ``rel`` is absolute, has ``..``, or leads out of ``root`` or through a link.
    """
    root = Path(root)
    pure = PurePosixPath(str(rel))
    if not str(rel) or pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise EvofoolError(f"{what} {str(rel)!r} is not a path inside {root}")
    path = root.joinpath(*pure.parts)
    where = root
    for part in pure.parts[:-1]:
        where = where / part
        if where.is_symlink():
            raise EvofoolError(f"{what} {str(rel)!r} leads through the symbolic link {where}")
    try:
        path.resolve().relative_to(root.resolve())
    except ValueError:
        raise EvofoolError(f"{what} {str(rel)!r} leads out of {root}") from None
    return path


def landing(path: str | Path) -> Path:
    """``path`` as the folder it will name once made: with a ``..`` after a part that does not
    exist yet ("others/x/.."), checks made on the text (is it new? empty?) pass, and then
    ``mkdir(parents=True)`` makes ``x`` and the path is ``others``. Resolved (``realpath``)
    where it holds ``..``; as given otherwise."""
    path = Path(path)
    return Path(os.path.realpath(path)) if ".." in path.parts else path


# --- reading -------------------------------------------------------------------------------
def _require_regular(fd: int, path: Path, limit: int | None = None) -> os.stat_result:
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise _refusal(path, st.st_mode)
    if limit is not None and st.st_size > limit:
        raise EvofoolError(f"{path} is {st.st_size:,} bytes, more than the {limit:,} such a file can "
                           f"hold; it is not a file evofool wrote")
    return st


def check_regular(path: str | Path, root: str | Path | None = None) -> os.stat_result | None:
    """The ``lstat`` of ``path`` (``None`` if it does not exist).

    Raises:
        EvofoolError: ``path`` is a link, a FIFO, a folder... (anything but a regular file).
    """
    path, dir_fd, name = _open_parent(path, root)
    try:
        st = _lstat_at(dir_fd, name)
    finally:
        os.close(dir_fd)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _refusal(path, st.st_mode)
    return st


def check_folder(path: str | Path, root: str | Path | None = None) -> bool:
    """Whether ``path`` is a real folder (``False``: it does not exist).

    Raises:
        EvofoolError: ``path`` (or a folder between ``root`` and it) is a link or a file.
    """
    path, root, parents, name = _split(path, root)
    try:
        os.close(_open_dir(root, (*parents, name)))
    except FileNotFoundError:
        return False
    return True


def read_bounded(path: str | Path, limit: int, root: str | Path | None = None) -> bytes:
    """All bytes of a regular file of at most ``limit`` bytes, read without following a link.

    Raises:
        FileNotFoundError: no such file.
        EvofoolError: a link, a FIFO, a device, a folder, or more than ``limit`` bytes.
    """
    path, dir_fd, name = _open_parent(path, root)
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        raise _explain(exc, path, dir_fd, name) from None
    finally:
        os.close(dir_fd)
    try:
        st = _require_regular(fd, path, limit)
        chunks, total, want = [], 0, st.st_size + 1  # one more byte tells a file that grew
        while True:
            chunk = os.read(fd, min(want, _CHUNK * 64, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise EvofoolError(f"{path} grew past the {limit:,} bytes such a file can hold")
            want = _CHUNK
        return b"".join(chunks)
    except OSError as exc:
        raise _with_filename(exc, path) from None
    finally:
        os.close(fd)


def read_json(path: str | Path, limit: int = JSON_LIMIT, root: str | Path | None = None):
    """A JSON document from a bounded regular file (``ValueError`` when it does not parse)."""
    return json.loads(read_bounded(path, limit, root))


# --- writing -------------------------------------------------------------------------------
def write_all(fd: int, data) -> None:
    """Writes every byte (``os.write`` may write less than asked)."""
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view):]


def _refuse_unless_file_or_absent(dir_fd: int, name: str, path: Path) -> os.stat_result | None:
    st = _lstat_at(dir_fd, name)
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise _refusal(path, st.st_mode)
    return st


def _create_temp(dir_fd: int, name: str, path: Path) -> int:
    """A new, empty temp file ``name``: a regular leftover of a crash is removed first, a link refused."""
    if _refuse_unless_file_or_absent(dir_fd, name, path) is not None:
        os.unlink(name, dir_fd=dir_fd)  # unlink removes the name, never what a link points at
    try:
        return os.open(name, _NEW_FILE_FLAGS, 0o666, dir_fd=dir_fd)
    except FileExistsError:
        raise EvofoolError(f"{path} appeared while evofool was about to write it: is another process "
                           f"writing in {path.parent}?") from None


def write_bytes_atomic(path: str | Path, data, *, root: str | Path | None = None, durable: bool = True,
                       previous: str | None = None) -> Path:
    """Writes ``path`` via a new temp file + rename, so readers never see half a file.

    Args:
        path: The file; it must be absent or a regular file.
        data: Bytes (or any buffer).
        root: The run folder or gallery ``path`` lies in: no folder between it and ``path``
            may be a link (default: the parent folder).
        durable: fsync the file and its folder (a crash cannot leave it empty). Files that
            are re-written at every checkpoint or can be exported again skip it.
        previous: Before the new file takes its place, rename the existing one to this name
            (in the same folder): ``checkpoint.safetensors`` → ``checkpoint.prev.safetensors``.

    Raises:
        EvofoolError: ``path``, its temp file or a folder on the way is a link or not a regular file.
        OSError: the write failed (disk full...); the target is unchanged and no temp file is left.
    """
    path, dir_fd, name = _open_parent(path, root)
    try:
        target = _refuse_unless_file_or_absent(dir_fd, name, path)
        if previous is not None:
            _refuse_unless_file_or_absent(dir_fd, previous, path.with_name(previous))
        tmp = name + ".tmp"
        fd = _create_temp(dir_fd, tmp, path.with_name(tmp))
        try:
            try:
                write_all(fd, data)
                if durable:
                    os.fsync(fd)
            finally:
                os.close(fd)
            if previous is not None and target is not None:
                os.replace(name, previous, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
            os.replace(tmp, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            _unlink_quietly(dir_fd, tmp)  # a full disk must not leave half a file behind
            raise
        if durable:
            os.fsync(dir_fd)
    except OSError as exc:
        raise _with_filename(exc, path) from None
    finally:
        os.close(dir_fd)
    return path


def _unlink_quietly(dir_fd: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=dir_fd)
    except OSError:
        pass


def write_text_atomic(path: str | Path, text: str, **kwargs) -> Path:
    """``write_bytes_atomic`` of UTF-8 text."""
    return write_bytes_atomic(path, text.encode("utf-8"), **kwargs)


def write_json_atomic(path: str | Path, data, **kwargs) -> Path:
    """``write_bytes_atomic`` of a JSON document (indented one space, newline-terminated)."""
    return write_text_atomic(path, json.dumps(data, indent=1) + "\n", **kwargs)


def png_bytes(image, compress_level: int = 6) -> bytes:
    """A PIL image encoded as PNG (in memory: a failed write then leaves no half file)."""
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def save_png_atomic(path: str | Path, image, *, compress_level: int = 6, durable: bool = False,
                    root: str | Path | None = None) -> Path:
    """Writes a PIL image as a PNG via ``write_bytes_atomic`` (not fsynced by default: PNGs are
    re-written at every checkpoint or export; the checkpoint is what a crash must not lose)."""
    return write_bytes_atomic(path, png_bytes(image, compress_level), root=root, durable=durable)


def remove_file(path: str | Path, root: str | Path | None = None) -> bool:
    """Deletes ``path`` if it is a regular file (never a link, a folder or what a link points at).

    Returns:
        Whether a file was deleted.
    """
    path, dir_fd, name = _open_parent(path, root)
    try:
        st = _lstat_at(dir_fd, name)
        if st is None or not stat.S_ISREG(st.st_mode):
            return False
        os.unlink(name, dir_fd=dir_fd)
        return True
    except OSError as exc:
        raise _with_filename(exc, path) from None
    finally:
        os.close(dir_fd)


def _open_existing(path, root, flags: int) -> tuple[Path, int]:
    path, dir_fd, name = _open_parent(path, root)
    try:
        fd = os.open(name, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    except OSError as exc:
        raise _explain(exc, path, dir_fd, name) from None
    finally:
        os.close(dir_fd)
    try:
        st = _require_regular(fd, path)
        if st.st_nlink > 1:
            # O_NOFOLLOW stops symbolic links, not hard ones: appending to, truncating or
            # locking such a file would change what its other names hold.
            raise EvofoolError(f"{path} has {st.st_nlink} hard links; evofool writes only files it made "
                               f"(copy the folder without hard links, or remove the extra names)")
    except BaseException:
        os.close(fd)
        raise
    return path, fd


def open_append_nofollow(path: str | Path, root: str | Path | None = None):
    """A file opened for appending bytes (created if missing), never through a link.

    Unbuffered: what ``write_all(fh.fileno(), ...)`` wrote is in the file, and closing it
    cannot fail on a full disk with data still buffered.

    Raises:
        EvofoolError: ``path`` is a link, a FIFO, a folder...
    """
    _, fd = _open_existing(path, root, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "ab", buffering=0)


def truncate_nofollow(path: str | Path, size: int, root: str | Path | None = None) -> None:
    """Cuts a regular file back to ``size`` bytes (fsynced); never through a link."""
    path, fd = _open_existing(path, root, os.O_WRONLY)
    try:
        os.ftruncate(fd, size)
        os.fsync(fd)
    except OSError as exc:
        raise _with_filename(exc, path) from None
    finally:
        os.close(fd)


# --- one writer per folder -----------------------------------------------------------------
class FolderLock:
    """An exclusive ``flock`` on ``FOLDER/.lock``, which holds the owner's pid while it is held.

    The kernel releases it when the process dies (even by SIGKILL); ``release`` empties the
    file first, so a folder at rest always has an empty ``.lock``.
    """

    def __init__(self, fd: int, path: Path) -> None:
        self._fd: int | None = fd
        self.path = path

    @property
    def held(self) -> bool:
        return self._fd is not None

    def check(self, what: str = "run folder") -> None:
        """Raises ``EvofoolError`` unless ``path`` is still the file this lock holds: a folder
        removed (or replaced by another at the same path) under a running process must not
        get its files, which are written by path, while another process may lock the new one."""
        if self._fd is None:
            return
        held = os.fstat(self._fd)
        try:
            now = os.lstat(self.path)
        except OSError:
            now = None
        if now is None or (now.st_dev, now.st_ino) != (held.st_dev, held.st_ino):
            raise EvofoolError(f"{what} {self.path.parent} was removed or replaced while this process "
                               f"held it; stopping without writing there")

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        except OSError:  # a full disk cannot stop a release; the next owner overwrites the pid
            pass
        os.close(fd)  # closing the only descriptor drops the flock

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # noqa: BLE001 - at interpreter exit; the kernel drops the lock anyway
            pass


def _owner(fd: int) -> str:
    text = os.pread(fd, LOCK_LIMIT, 0).decode("ascii", "replace").strip()
    return f"process {text}" if text.isdigit() else "another process"


def held_by_another_process(folder: str | Path) -> bool:
    """Whether another live process holds ``folder``'s lock: its pid is in ``.lock`` while it
    holds it (a release empties the file; a crashed holder's pid is gone). Read without
    locking, so asking never keeps a run from starting."""
    folder = Path(folder)
    try:
        text = read_bounded(folder / LOCK, LOCK_LIMIT, folder).decode("ascii").strip()
    except (OSError, EvofoolError, UnicodeDecodeError):
        return False
    if not text.isdigit() or int(text) == os.getpid():
        return False
    try:
        os.kill(int(text), 0)
    except PermissionError:  # alive, another user's
        return True
    except (ProcessLookupError, OverflowError):  # gone; no such pid
        return False
    return True


def is_lock_file(path: str | Path) -> bool:
    """Whether ``path`` is a regular file that looks like one of evofool's lock files (empty or a pid)."""
    try:
        text = read_bounded(path, LOCK_LIMIT).decode("ascii")
    except (OSError, EvofoolError, UnicodeDecodeError):
        return False
    return text.strip() == "" or text.strip().isdigit()


def lock_folder(folder: str | Path, what: str = "run folder", wait: float = 0.0) -> FolderLock:
    """Takes the folder's lock, so only one process writes there at a time.

    Args:
        folder: The run folder or gallery.
        what: How the folder is named in the error.
        wait: Seconds to keep trying while another process holds it (0: fail at once).

    Raises:
        EvofoolError: another process holds the lock ("run folder X is in use by process N"),
            or ``.lock`` is a link or not a regular file.
    """
    folder = Path(folder)
    path, fd = _open_existing(folder / LOCK, folder, os.O_RDWR | os.O_CREAT)
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise EvofoolError(f"{what} {folder} is in use by {_owner(fd)}; wait until it ends "
                                       f"(or stop it) and try again") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    except OSError as exc:
        os.close(fd)
        raise _with_filename(exc, path) from None
    except BaseException:
        os.close(fd)
        raise
    return FolderLock(fd, path)
