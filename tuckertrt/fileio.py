"""The one way tuckertrt writes results, and the checks that keep a user's files safe.

Every output is staged in a temporary name beside its destination (``.<name>.tuckertrt-<pid>-<random>.part``) and
published by rename once complete. A folder tuckertrt publishes carries a marker file (:data:`MARKER`) listing the
files it wrote; an existing folder is replaced only when it is empty or carries that marker and holds nothing else.
Publishing defers SIGINT/SIGTERM, so an interrupt never splits a set of outputs. Temporaries left by a killed run
(whose process no longer exists) are removed by the next run that writes the same destination.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
import unicodedata
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from tuckertrt.errors import Terminated, TuckerTRTError, UsageError

MARKER = ".tuckertrt"
MARKER_FORMAT = "tuckertrt-output/1"
_TEMP_TAG = "tuckertrt-"
_SAFE_CHARS = re.compile(r"[^A-Za-z0-9._+-]+")
MAX_NAME = 120
FULL_DISK_BYTES = 1 << 20  # a write that failed with less free space than this is reported as a full disk


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


# ---- names and places -------------------------------------------------------------------------------------------

def safe_name(text: str, fallback: str = "unnamed") -> str:
    """``text`` as a file name of letters, digits and ``._+-`` only: no separators, no leading dot, not empty."""
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    name = _SAFE_CHARS.sub("_", ascii_text).strip("._")[:MAX_NAME]
    return name or fallback


def check_separate(outputs: Iterable[str | os.PathLike], inputs: Iterable[str | os.PathLike]) -> None:
    """Refuse any output that resolves (symlinks followed) to an input, inside an input folder, or to a folder
    holding an input: writing it would change or replace the input."""
    resolved_inputs = [(Path(p), Path(p).resolve()) for p in inputs]
    for out in outputs:
        target = Path(out).resolve()
        for given, source in resolved_inputs:
            if target == source:
                raise UsageError(f"output {out} would overwrite the input {given}; choose another output path")
            if source in target.parents:
                raise UsageError(f"output {out} would overwrite the input {given} (it lies inside that input folder); "
                                 f"choose another place")
            if target in source.parents:
                raise UsageError(f"output {out} would overwrite the input {given} (it replaces the folder holding "
                                 f"it); choose another output path")


def check_input_file(path: str | os.PathLike, what: str = "input") -> Path:
    """``path`` exists and is a regular file (not a folder, FIFO or device)."""
    p = Path(path)
    if not p.exists():
        raise TuckerTRTError(f"{what} not found: {p}")
    if not p.is_file():
        kind = "a folder" if p.is_dir() else "not a regular file"
        raise TuckerTRTError(f"{what} {p} is {kind}; expected a file")
    if not os.access(p, os.R_OK):
        raise TuckerTRTError(f"{what} {p} is not readable")
    return p


def check_writable(dest: str | os.PathLike) -> None:
    """The nearest existing folder above ``dest`` accepts new files (probed with a real write: as root,
    ``os.access`` says yes even on read-only mounts)."""
    parent = Path(dest).absolute().parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise TuckerTRTError(f"cannot write {dest}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{_TEMP_TAG}probe-", dir=parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise TuckerTRTError(f"cannot write into {parent}: {e.strerror or e}") from None


def ensure_output_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` as a writable directory or raise a one-line error."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise TuckerTRTError(f"output path {p} exists and is not a directory")
    try:
        p.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TuckerTRTError(f"cannot create output directory {p}: {e.strerror}") from None
    if not os.access(p, os.W_OK | os.X_OK):
        raise TuckerTRTError(f"output directory {p} is not writable")
    return p


# ---- ownership ----------------------------------------------------------------------------------------------------

def owned_files(folder: Path) -> set[str] | None:
    """The files tuckertrt wrote into ``folder`` (relative paths, from its marker), or None without a marker."""
    try:
        marker = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != MARKER_FORMAT or not isinstance(marker.get("files"),
                                                                                               list):
        return None
    return {str(f) for f in marker["files"]}


def _contents(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir() or p.is_symlink())


def foreign_files(folder: Path) -> list[str]:
    """Files in ``folder`` that tuckertrt's marker does not list (every file when there is no marker)."""
    owned = owned_files(folder) or set()
    return [f for f in _contents(folder) if f != MARKER and f not in owned]


def check_replaceable(dest: str | os.PathLike) -> None:
    """``dest`` may be (re)published: absent, an empty folder, or a folder tuckertrt wrote holding only its files."""
    dest = Path(dest)
    if dest.is_symlink():
        raise UsageError(f"output {dest} is a symbolic link; tuckertrt does not replace links")
    if not dest.exists():
        return
    if not dest.is_dir():
        raise UsageError(f"output {dest} exists and is not a folder; tuckertrt does not replace it")
    if not any(dest.iterdir()):
        return
    if owned_files(dest) is None:
        raise UsageError(f"output folder {dest} exists and was not written by tuckertrt; choose a new or "
                             f"empty folder")
    foreign = foreign_files(dest)
    if foreign:
        more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
        raise UsageError(f"output folder {dest} holds files tuckertrt did not write ({', '.join(foreign[:3])}"
                             f"{more}); move them or choose another folder")


def check_replaceable_file(dest: str | os.PathLike, written_by_tuckertrt: bool) -> None:
    """An existing file at ``dest`` is replaced only when the caller recognised it as an earlier tuckertrt output."""
    dest = Path(dest)
    if dest.is_symlink():
        raise UsageError(f"output {dest} is a symbolic link; tuckertrt does not replace links")
    if dest.exists() and not dest.is_file():
        raise UsageError(f"output {dest} exists and is not a regular file")
    if dest.exists() and not written_by_tuckertrt:
        raise UsageError(f"output {dest} exists and was not written by tuckertrt; choose another name")


def write_marker(folder: Path, **facts: Any) -> None:
    files = [f for f in _contents(folder) if f != MARKER]
    from tuckertrt.version import __version__

    text = json.dumps({"format": MARKER_FORMAT, "version": __version__, **facts, "files": files}, indent=1)
    (folder / MARKER).write_text(text + "\n")


def zip_holds(path: str | os.PathLike, needle: bytes, member_suffix: str = "data.pkl") -> bool:
    """Whether the zip archive ``path`` (a ``torch.save`` file) has a member ``*<member_suffix>`` containing
    ``needle``: recognises tuckertrt's own saved models without unpickling them."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(member_suffix):
                    with z.open(name) as f:
                        return needle in f.read(1 << 16)
    except (OSError, zipfile.BadZipFile, ValueError):
        return False
    return False


# ---- interrupts ---------------------------------------------------------------------------------------------------

FAULT_ENV = "TUCKERTRT_TEST_FAULT"  # "<point>[#N]:<SIGNAL>": the process signals itself there (fault-injection tests)
_fault_counts: dict[str, int] = {}


def fault_point(name: str) -> None:
    """A named point in writing (``staged``, ``replace``, ``publish``) where the fault-injection tests stop the
    process with a signal, when :data:`FAULT_ENV` asks for it (its N-th pass with ``#N``)."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return
    point, _, signame = spec.partition(":")
    point, _, nth = point.partition("#")
    if point != name:
        return
    _fault_counts[name] = _fault_counts.get(name, 0) + 1
    if _fault_counts[name] == int(nth or 1):
        os.kill(os.getpid(), getattr(signal, signame or "SIGTERM"))


def raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends, so a few renames that publish a set are never split."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Problems:
    """Pre-flight findings gathered across checks, raised together as one line (exit 2 if any is a usage error)."""

    def __init__(self) -> None:
        self.errors: list[TuckerTRTError] = []

    def check(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TuckerTRTError as e:
            self.errors.append(e)
            return None

    def raise_if_any(self) -> None:
        if not self.errors:
            return
        text = "; ".join(dict.fromkeys(str(e) for e in self.errors[:4]))
        if len(self.errors) > 4:
            text += f" (and {len(self.errors) - 4} more problems)"
        usage = any(isinstance(e, UsageError) for e in self.errors)
        raise (UsageError if usage else TuckerTRTError)(text)


# ---- staging and publishing --------------------------------------------------------------------------------------

def _temp_prefix(dest: Path) -> str:
    return f".{dest.name[:MAX_NAME]}.{_TEMP_TAG}{os.getpid()}-"


def clean_stale_temporaries(dest: Path) -> None:
    """Remove temporaries of ``dest`` left by tuckertrt runs that were killed (their pid no longer exists)."""
    pattern = re.compile(re.escape(f".{dest.name[:MAX_NAME]}.{_TEMP_TAG}") + r"(\d+)-[^/]*\.part$")
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return
    for p in siblings:
        m = pattern.match(p.name)
        if not m or _alive(int(m.group(1))):
            continue
        if p.is_dir() and not p.is_symlink():
            if (p / MARKER).is_file():
                shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def make_staging_dir(dest: Path) -> Path:
    """A fresh temporary folder beside ``dest`` (marked as tuckertrt's, so a later run may clean it)."""
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        clean_stale_temporaries(dest)
        tmp = Path(tempfile.mkdtemp(prefix=_temp_prefix(dest), suffix=".part", dir=dest.parent))
    except OSError as e:
        raise TuckerTRTError(f"cannot write beside {dest}: {e.strerror or e}") from None
    try:
        tmp.chmod(0o777 & ~_umask())
        write_marker(tmp, pid=os.getpid(), partial=True)
        fault_point("staged")
    except BaseException as e:
        discard_temporary(tmp, dest, e)
        if isinstance(e, OSError):
            raise TuckerTRTError(f"cannot write beside {dest}: {e.strerror or e}") from None
        raise
    return tmp


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux renameat2 RENAME_EXCHANGE); elsewhere, two renames."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        at_fdcwd, rename_exchange = -100, 2
        if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
            return
        err = ctypes.get_errno()
        if err not in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
            raise OSError(err, os.strerror(err), str(b))
    except AttributeError:
        pass
    aside = a.with_name(a.name + ".old")
    os.rename(b, aside)
    os.rename(a, b)
    os.rename(aside, a)


def publish(staging: Path, moves: Mapping[str, Path]) -> None:
    """Move ``staging/<name>`` onto each destination as one step (interrupts held): folders are swapped with the
    previous one (checked replaceable), files replace the previous file. ``staging`` then holds what was
    replaced and is removed."""
    fault_point("publish")
    with signals_deferred():
        for name, dest in moves.items():
            src = staging / name
            if src.is_dir():
                check_replaceable(dest)
                write_marker(src)
                if dest.is_dir() and any(dest.iterdir()):
                    _exchange(src, dest)
                else:
                    os.rename(src, dest)  # onto nothing or an empty folder
            else:
                os.replace(src, dest)
        shutil.rmtree(staging, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; publish it as ``dest`` only if the block succeeds.

    ``dest`` must be absent, empty, or an earlier tuckertrt output holding only its own files (checked before
    the block runs and again when publishing); anything else is refused, never replaced."""
    dest = Path(dest)
    check_replaceable(dest)
    staging = make_staging_dir(dest)
    try:
        (staging / "out").mkdir()
        yield staging / "out"
        publish(staging, {"out": dest})
    except BaseException as e:
        discard_temporary(staging, dest, e)
        raise


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only if the block succeeds."""
    dest = Path(dest)
    if dest.parent and not dest.parent.exists():
        ensure_output_dir(dest.parent)
    clean_stale_temporaries(dest)
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(dest), suffix=".part", dir=dest.parent or ".")
    tmp_path = Path(tmp)
    try:
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600 files; artifacts get the usual permissions
        os.close(fd)
        yield tmp_path
        fault_point("replace")
        os.replace(tmp_path, dest)
    except BaseException as e:
        discard_temporary(tmp_path, dest, e)
        raise


def discard_temporary(temp: Path, dest: Path, error: BaseException) -> None:
    """Remove ``temp`` after ``error`` stopped a write of ``dest``; a full disk is reported as such in one line
    (the caller re-raises anything else)."""
    full = disk_full(temp.parent, error)
    if temp.is_dir() and not temp.is_symlink():
        shutil.rmtree(temp, ignore_errors=True)
    else:
        temp.unlink(missing_ok=True)
    if full:
        raise TuckerTRTError(f"cannot write {dest}: No space left on device") from None


def disk_full(where: Path, error: BaseException) -> bool:
    """Whether ``error`` (from any writer: torch, onnx, nibabel word it differently) came from a full disk."""
    if isinstance(error, OSError):
        return error.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(error, Exception):
        return False
    try:
        stats = os.statvfs(where)
    except OSError:
        return False
    return stats.f_bavail * stats.f_frsize < FULL_DISK_BYTES


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes_atomic(dest: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_json_atomic(dest: str | os.PathLike, obj: Any) -> Path:
    text = json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_bytes_atomic(dest, text.encode())


def read_json(path: str | os.PathLike, what: str = "JSON file") -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise TuckerTRTError(f"{what} not found: {path}") from None
    except IsADirectoryError:
        raise TuckerTRTError(f"{what} {path} is a folder, not a file") from None
    except OSError as e:
        raise TuckerTRTError(f"cannot read {what} {path}: {e.strerror or e}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise TuckerTRTError(f"{what} {path} is not valid JSON: {e}") from None


def _json_default(o: Any) -> Any:
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
