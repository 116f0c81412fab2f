"""Where a run writes: refusal rules for `--out`, the manifest of files pyro-dps wrote, the lock, staging.

    check_out_dir(out, overwrite)          # before any work: refuse ".", "..", "~", "/", a parent of the cwd,
                                           # a file, or a non-empty directory without overwrite
    with run_lock(out):                    # a second run into the same OUT fails at once
        with staged_directory(out, overwrite) as stage:
            ... write files into stage ...  # published into OUT only when everything was written

A run directory keeps `.pyro-dps-manifest.json`: the name, size and mtime of every file pyro-dps put
there. With `--overwrite` only those files (unchanged since) are replaced; anything else in OUT is left
as it is, and a file of the user's that has the name of a run file makes the run refuse before it starts.
Staging folders are unique per process and carry a marker, so the next run into the same OUT removes
the ones a killed run left behind.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError
from .outputs import current_umask, write_atomic

MANIFEST = ".pyro-dps-manifest.json"
STAGING_MARKER = ".pyro-dps-staging"
#: every file a run (or `pyro-dps report` into a run directory) may write there
RUN_FILES = frozenset({"metrics.json", "weights.csv", "draws.nc", "posterior.safetensors", "weights_by_group.png",
                       "report.html", "report.selection.csv", "examples.npz", MANIFEST})


def check_out_file(path: str | os.PathLike, overwrite: bool = False, what: str = "output file") -> Path:
    """A file to write: not a directory, and not an existing file unless `overwrite` (or it is a run file
    pyro-dps wrote in its run directory, unchanged since)."""
    path = Path(path)
    refuse_dangerous(path, what)
    if path.is_dir():
        raise ConfigError(f"{what} {str(path)!r} is a directory; give a file name")
    if (path.exists() or path.is_symlink()) and not overwrite and not owns(path.parent, path.name):
        raise ConfigError(f"{what} {str(path)!r} already exists; pass --overwrite to replace it")
    return path


def _resolved(path: str | os.PathLike) -> Path:
    return Path(os.path.abspath(path)).resolve()


def refuse_dangerous(out: str | os.PathLike, what: str = "output directory") -> Path:
    """`out` unless it is ".", "..", the home directory, "/" or the current directory or one of its parents."""
    target = _resolved(out)
    cwd = Path.cwd().resolve()
    if str(out).rstrip("/") in (".", "..") or target == Path("/") or target == Path.home().resolve() \
            or target == cwd or target in cwd.parents:
        raise ConfigError(f"{what} {str(out)!r} is refused: it is {_why(target, cwd)}, and a run must not "
                          "write into it; choose a new directory such as runs/NAME")
    return target


def _why(target: Path, cwd: Path) -> str:
    if target == Path("/"):
        return "the root directory"
    if target == Path.home().resolve():
        return "your home directory"
    return "the current directory" if target == cwd else "a parent of the current directory"


def check_out_dir(out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Refuse an output directory the run could damage, before any work starts (see the module docstring)."""
    out = Path(out)
    refuse_dangerous(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"output directory {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise ConfigError(f"output directory {str(out)!r} exists and is not empty; pass --overwrite to replace "
                              "the files an earlier pyro-dps run wrote there (nothing else is touched), or choose "
                              "a new directory")
        _check_replaceable(out)
    return out


def _check_replaceable(out: Path) -> None:
    """With --overwrite: every file in OUT that has a run file's name must be one pyro-dps wrote, unchanged."""
    ours = read_manifest(out)
    for name in sorted(RUN_FILES - {MANIFEST}):
        path = out / name
        if (path.exists() or path.is_symlink()) and not _unchanged(path, ours.get(name)):
            raise ConfigError(f"{str(path)!r} was not written by pyro-dps (or was changed since): it is kept; "
                              "move it away or choose another output directory")


def _unchanged(path: Path, entry) -> bool:
    """The file is as the manifest entry (or, mid-publish, its previous version) recorded it."""
    if not isinstance(entry, dict) or path.is_symlink() or not path.is_file():
        return False
    now = _entry(path)
    return any(isinstance(e, dict) and e.get("size") == now["size"] and e.get("mtime_ns") == now["mtime_ns"]
               for e in (entry, entry.get("previous")))


def _entry(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def read_manifest(run_dir: str | os.PathLike) -> dict[str, dict]:
    """{name: {size, mtime_ns}} of the files pyro-dps wrote in `run_dir` (empty when there is no manifest)."""
    path = Path(run_dir) / MANIFEST
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    files = document.get("files") if isinstance(document, dict) else None
    return {k: v for k, v in files.items() if k in RUN_FILES} if isinstance(files, dict) else {}


def owns(run_dir: str | os.PathLike, name: str) -> bool:
    """True when `run_dir/name` is a run file pyro-dps wrote there and nobody changed since."""
    return name in RUN_FILES and _unchanged(Path(run_dir) / name, read_manifest(run_dir).get(name))


def record(run_dir: str | os.PathLike, names) -> None:
    """Add files (already in `run_dir`) to its manifest, written atomically; entries of files gone are dropped."""
    run_dir = Path(run_dir)
    files = {k: v for k, v in read_manifest(run_dir).items() if (run_dir / k).is_file()}
    for name in names:
        files[name] = _entry(run_dir / name)
    _write_manifest(run_dir, files)


def _write_manifest(run_dir: Path, files: dict) -> None:
    write_atomic(run_dir / MANIFEST, lambda fh: json.dump({"written_by": "pyro-dps", "files": files}, fh, indent=1,
                                                          sort_keys=True))


@contextlib.contextmanager
def run_lock(out: str | os.PathLike):
    """Hold `.OUT.lock` beside OUT for the block; a second holder fails at once with a clear message."""
    out = Path(out)
    path = out.parent / f".{out.name}.lock"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"output directory {str(out)!r} cannot be written: {exc.strerror or exc}") from exc
    fd = _acquire(path, out)
    try:
        yield path
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)  # unlinked while still held: a waiting process re-checks the inode
        os.close(fd)


def _acquire(path: Path, out: Path) -> int:
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise ConfigError(f"output directory {str(out)!r} cannot be written: {exc.strerror or exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise ConfigError(f"another pyro-dps run{f' (pid {holder})' if holder else ''} is writing to "
                              f"{str(out)!r} (lock {str(path)!r}); wait for it to finish or choose another --out")
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            return fd
        os.close(fd)  # the holder released and unlinked it between our open and flock: try again


def remove_stale_staging(out: str | os.PathLike) -> None:
    """Staging folders of OUT that a killed run left behind (marked as ours; call with the lock held)."""
    out = Path(out)
    if not out.parent.is_dir():
        return
    for stage in out.parent.glob(f".{out.name}.staging-*"):
        if stage.is_dir() and not stage.is_symlink() and (stage / STAGING_MARKER).is_file():
            shutil.rmtree(stage, ignore_errors=True)


@contextlib.contextmanager
def staged_directory(out: str | os.PathLike, overwrite: bool = False):
    """Yield a fresh staging folder beside OUT; on success its files are published into OUT, on failure
    (or a signal) it is removed and OUT is left as it was. If OUT changed during the run so that it may no
    longer be written, the finished run's files are kept in the staging folder and the error says where."""
    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=out.parent))
        stage.chmod(0o777 & ~current_umask())
        (stage / STAGING_MARKER).touch()
    except OSError as exc:
        raise ConfigError(f"output directory {str(out)!r} cannot be written: {exc.strerror or exc}") from exc
    keep = False
    try:
        yield stage
        try:
            check_out_dir(out, overwrite)  # again: OUT may have changed while the run worked
        except ConfigError as exc:
            keep = True
            (stage / STAGING_MARKER).unlink(missing_ok=True)  # not a leftover to clean: the run's results
            raise ConfigError(f"{exc}; the finished run's files are kept in {str(stage)!r}") from None
        publish(stage, out)
    except OSError as exc:  # a full disk, a folder made read-only meanwhile, ...
        raise ConfigError(f"output directory {str(out)!r} cannot be written: {exc.strerror or exc}; nothing "
                          "was published") from exc
    finally:
        if not keep:
            shutil.rmtree(stage, ignore_errors=True)


def publish(stage: Path, out: Path) -> None:
    """Move the staged files into OUT: a rename of the whole folder when OUT is new (or empty), else file by
    file, replacing only the run files of the manifest. Before the moves the manifest accepts both the old
    and the new version of each file, so a run killed half-way leaves a directory the next run may reuse."""
    names = sorted(p.name for p in stage.iterdir() if p.name != STAGING_MARKER)
    if not out.exists() or (out.is_dir() and not any(out.iterdir())):
        if out.exists():
            out.rmdir()  # empty, so nothing of the user's
        os.replace(stage, out)
        (out / STAGING_MARKER).unlink(missing_ok=True)
        record(out, names)
        return
    old = read_manifest(out)
    stale = [n for n in old if n not in names and n != MANIFEST and owns(out, n)]
    _write_manifest(out, {**old, **{n: {**_entry(stage / n), "previous": old.get(n)} for n in names}})
    for name in names:
        os.replace(stage / name, out / name)
    for name in stale:  # an earlier run's file this run did not write (e.g. a report that failed this time)
        (out / name).unlink(missing_ok=True)
    record(out, names)
