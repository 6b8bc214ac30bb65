"""Atomic file output and robust input: a crash or a bad input never leaves a half-written or
clobbered result, and a file that cannot be read is one clear error naming it."""

from __future__ import annotations

import codecs
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

#: byte-order marks read as text (longest first: the UTF-32 LE mark starts with the UTF-16 LE one)
_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"), (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"),
)


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to a temporary file beside ``path``, then rename it over ``path``. The file
    gets the permissions a plain ``open()`` would give (``0666 & ~umask``), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def finite_json(obj: Any) -> Any:
    """``obj`` with every NaN / ±inf float (also inside numpy scalars and arrays) replaced by
    ``None``: the JSON we write is always valid JSON (``null`` where a value is undefined)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: finite_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite_json(v) for v in obj]
    try:
        import numpy as np

        if isinstance(obj, np.ndarray):
            return finite_json(obj.tolist())
        if isinstance(obj, np.floating):
            return finite_json(float(obj))
    except ImportError:  # pragma: no cover
        pass
    return obj


def atomic_write_json(path: str | Path, obj: Any, *, indent: int = 2) -> Path:
    text = json.dumps(finite_json(obj), indent=indent, ensure_ascii=False, default=_default, allow_nan=False)
    return atomic_write_text(path, text + "\n")


def _default(o: Any) -> Any:
    try:
        import numpy as np

        if isinstance(o, np.generic):
            return finite_json(o.item())
        if isinstance(o, np.ndarray):
            return finite_json(o.tolist())
    except ImportError:  # pragma: no cover
        pass
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


# --------------------------------------------------------------------------- reading
def read_bytes(path: str | Path) -> bytes:
    """The bytes of a file; a missing file, a folder or an unreadable file is one clear error."""
    from pluralign.errors import PluralignError

    path = Path(path)
    if not path.exists():
        raise PluralignError("file not found", file=path)
    if path.is_dir():
        raise PluralignError("is a folder, not a file", file=path)
    try:
        return path.read_bytes()
    except OSError as e:
        raise PluralignError(f"cannot read ({e.strerror or e})", file=path) from None


def decode_text(data: bytes, path: str | Path | None = None) -> str:
    """Text of a file's bytes: UTF-8, or UTF-8 / UTF-16 / UTF-32 with a byte-order mark. Anything
    else (Latin-1, binary) is refused with the offset of the first bad byte."""
    from pluralign.errors import PluralignError

    enc = next((e for bom, e in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = data.decode(enc)
    except UnicodeDecodeError as e:
        raise PluralignError(
            f"not {enc.upper().replace('-SIG', '')} text (byte 0x{data[e.start]:02x} at offset {e.start}); "
            "save the file as UTF-8", file=path,
        ) from None
    text = text.lstrip("\ufeff")
    if "\x00" in text:
        odd, even = data[1:400:2], data[0:400:2]
        utf16 = max(odd.count(0), even.count(0)) > 0.4 * max(1, len(odd))
        hint = "; UTF-16 without a byte-order mark? save it as UTF-8" if utf16 else ""
        raise PluralignError(f"binary file (holds NUL bytes), not text{hint}", file=path)
    return text


def read_text(path: str | Path) -> str:
    """A text file's content (see :func:`decode_text`); a clear error for anything unreadable."""
    return decode_text(read_bytes(path), path)


def _reject_constant(name: str):
    raise ValueError(name)


def parse_json_text(text: str, path: str | Path | None = None, *, allow_nan: bool = False) -> Any:
    """Parse JSON text; NaN / Infinity (not JSON, though Python writes them) are refused unless
    ``allow_nan``; too-deep nesting and bad syntax are one clear error."""
    from pluralign.errors import PluralignError

    kw = {} if allow_nan else {"parse_constant": _reject_constant}
    try:
        return json.loads(text, **kw)
    except json.JSONDecodeError as e:
        raise PluralignError(f"invalid JSON ({e.msg}, column {e.colno})", file=path, row=e.lineno) from None
    except RecursionError:
        raise PluralignError("invalid JSON (nested too deeply)", file=path) from None
    except ValueError as e:  # parse_constant
        raise PluralignError(f"invalid JSON ({e} is not a number JSON allows)", file=path) from None


def read_json(path: str | Path, *, allow_nan: bool = False) -> Any:
    """A JSON file (UTF-8, or UTF-16/32 with a byte-order mark); one clear error otherwise."""
    return parse_json_text(read_text(path), path, allow_nan=allow_nan)


# --------------------------------------------------------------------------- output folders
def check_writable_dir(path: str | Path, *, field: str = "out") -> Path:
    """Fail now, before any work, if ``path`` cannot become or be written as an output folder:
    it is a file, or it (or the nearest existing parent) is not writable."""
    from pluralign.errors import PluralignError

    path = Path(path)
    p = path
    while not p.exists():
        if p.parent == p:
            break
        p = p.parent
    if p.exists() and not p.is_dir():
        what = "is a file" if p == path else f"lies under {p}, which is a file"
        raise PluralignError(f"output folder {what}, not a folder", file=path, field=field)
    try:
        fd, tmp = tempfile.mkstemp(prefix=".pluralign-write-test.", dir=p)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise PluralignError(f"cannot write here ({e.strerror or e})", file=p, field=field) from None
    return path


def check_writable_file(path: str | Path, *, field: str = "out") -> Path:
    """Fail now if ``path`` cannot be written as a file: it is a folder, or its folder is not writable."""
    from pluralign.errors import PluralignError

    path = Path(path)
    if path.is_dir():
        raise PluralignError("is a folder; give a file name", file=path, field=field)
    check_writable_dir(path.parent, field=field)
    return path


def replace_dir(staging: str | Path, final: str | Path) -> Path:
    """Put the complete folder ``staging`` in the place of ``final`` (two renames: the old folder
    is moved aside, then removed; a crash in between leaves the old or the new folder complete)."""
    staging, final = Path(staging), Path(final)
    old = None
    if final.exists():
        old = final.with_name(f".{final.name}.old-{os.getpid()}")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final, old)
    os.replace(staging, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return final


def fsync_tree(path: str | Path) -> None:
    """Flush every file under ``path`` (and the folders) to disk before it is renamed into place."""
    for root, dirs, files in os.walk(path):
        for f in files:
            _fsync_dir(os.path.join(root, f))
    _fsync_dir(path)


def _fsync_dir(path: str | Path) -> None:
    """fsync a file or folder by path, ignoring what the platform does not allow."""
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- a result set replaced as a whole
STAGED_MARK = ".pluralign-commit"


def is_eval_set_file(name: str) -> bool:
    """Files of one ``pluralign eval`` result set (replaced together)."""
    return (name.startswith("eval-") and name.endswith(".json")) or name in ("summary.json", "summary.png")


class deferred_signals:
    """SIGINT / SIGTERM arriving inside the block are held and delivered when it ends (so a
    commit of a few renames is never cut in the middle). Main thread only; elsewhere a no-op."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __enter__(self):
        import signal
        import threading

        self.got, self.old = [], {}
        if threading.current_thread() is not threading.main_thread():
            return self
        for name in self.SIGNALS:
            sig = getattr(signal, name)
            self.old[sig] = signal.signal(sig, lambda s, f: self.got.append(s))
        return self

    def __exit__(self, *exc):
        import signal

        for sig, h in self.old.items():
            signal.signal(sig, h)
        for sig in self.got[:1]:
            os.kill(os.getpid(), sig)
        return False


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_staged(final: str | Path, owned=is_eval_set_file) -> None:
    """Finish or undo what a crashed :class:`StagedOutput` left beside ``final``: a staging
    folder whose commit had begun is put in place; one of a dead process without a commit is
    removed; an old set left after a completed swap is removed."""
    final = Path(final)
    parent = final.parent
    if not parent.is_dir():
        return
    for st in sorted(parent.glob(f".{final.name}.staging-*")):
        if (st / STAGED_MARK).exists():
            if final.exists():
                for e in list(final.iterdir()):
                    if not owned(e.name) and not (st / e.name).exists():
                        os.replace(e, st / e.name)
            replace_dir(st, final)
            (final / STAGED_MARK).unlink(missing_ok=True)
            continue
        try:
            pid = int(st.name.rsplit("staging-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if not _pid_alive(pid) or pid == os.getpid():
            shutil.rmtree(st, ignore_errors=True)
    for old in parent.glob(f".{final.name}.old-*"):
        if final.exists():
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(old, final)


class StagedOutput:
    """Write a result set into a staging folder (``path``), then :meth:`commit` it: the files of
    ``final`` that the new set writes again are replaced by the new ones as a whole; every other
    entry of ``final`` (earlier results of other methods or datasets, notes) is kept. An
    interrupted run leaves the old files, a committed one the new set; never a mix.

    The staging folder is a sibling of ``final``, swapped in by two renames; where the parent
    cannot be written it lies inside ``final`` and the set's files are moved one by one (with
    SIGINT / SIGTERM held back).
    """

    def __init__(self, final: str | Path, *, owned=is_eval_set_file):
        import atexit

        self.final, self.owned, self.done = Path(final), owned, False
        recover_staged(self.final, owned)
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self.inside = self.final.is_symlink()
        if not self.inside:
            try:
                self.path = Path(tempfile.mkdtemp(prefix=f".{self.final.name}.staging-{os.getpid()}-", dir=self.final.parent))
            except OSError:
                self.inside = True
        if self.inside:
            self.final.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=self.final))
        os.chmod(self.path, 0o777 & ~_umask())
        atexit.register(self._cleanup)

    def commit(self) -> Path:
        with deferred_signals():
            fsync_tree(self.path)
            new = {e.name for e in self.path.iterdir()}
            if self.inside:
                old = Path(tempfile.mkdtemp(prefix=f".old-{os.getpid()}-", dir=self.final))
                for e in list(self.final.iterdir()):
                    if self.owned(e.name) and e.is_file() and e.name in new:
                        os.replace(e, old / e.name)
                for e in list(self.path.iterdir()):
                    os.replace(e, self.final / e.name)
                shutil.rmtree(old, ignore_errors=True)
                shutil.rmtree(self.path, ignore_errors=True)
            else:
                (self.path / STAGED_MARK).write_bytes(b"")
                if self.final.exists():
                    for e in list(self.final.iterdir()):  # every entry the new set does not replace is kept
                        if e.name not in new and not e.name.startswith(f".{self.final.name}.staging-"):
                            os.replace(e, self.path / e.name)
                replace_dir(self.path, self.final)
                (self.final / STAGED_MARK).unlink(missing_ok=True)
                _fsync_dir(self.final.parent)
            self.done = True
        return self.final

    def abort(self) -> None:
        self._cleanup()

    def _cleanup(self) -> None:
        if not self.done and self.path.exists() and not (self.path / STAGED_MARK).exists():
            shutil.rmtree(self.path, ignore_errors=True)
            self.done = True


# ------------------------------------------------------------------------------ output folders
#: files that show which kind of run a folder holds
_KIND_SIGNS = {"train": ("train_config.json", "checkpoints"), "eval": ("summary.json",),
               "softprompt": ("prompt.safetensors", "baseline.json", "pareto.json"), "report": ("index.html",)}
_LOCKS: dict[str, int] = {}


def output_kind(path: str | Path) -> str | None:
    """The kind of pluralign run whose outputs ``path`` holds (``train``, ``eval``,
    ``softprompt``, ``report``), from its files; None for an empty or unknown folder."""
    p = Path(path)
    if not p.is_dir():
        return None
    for k, signs in _KIND_SIGNS.items():
        if any((p / s).exists() for s in signs):
            return k
    if any(e.name.startswith("eval-") and e.name.endswith(".json") for e in p.iterdir()):
        return "eval"
    return None


def claim_output(path: str | Path, kind: str, *, field: str = "out", create: bool = True) -> Path:
    """Make ``path`` the output folder of one run of ``kind`` (``eval``, ``train``, ``softprompt``, ``report``),
    or refuse with one clear error: the working folder or a folder above it (``.``, ``..``,
    ``''``); a folder holding another kind of run (:func:`output_kind`); a folder another process
    is writing. The last is an advisory lock (``flock``) on the folder itself, held until this
    process exits (the kernel drops it when a process dies, so no stale lock is ever left and no
    file is added). ``create=False``: check only, and lock the folder if it exists (a run that is
    refused later leaves no folder behind; claim again with ``create=True`` before writing).
    Returns the folder."""
    import fcntl

    from pluralign.errors import PluralignError

    if str(path).strip() == "":
        raise PluralignError("an output folder is needed, got ''", field=field)
    p = Path(path)
    here, full = Path.cwd().resolve(), p.resolve()
    if full == here or full in here.parents:
        raise PluralignError("the output folder must be a folder of its own, not the working folder or one above it "
                             "(its files would be swapped out)", file=path, field=field)
    other = output_kind(p)
    if other is not None and other != kind:
        raise PluralignError(f"this folder holds the outputs of a `pluralign {other}` run; give this {kind} run another --out",
                             file=path, field=field)
    if not create and not p.is_dir():
        return p
    p.mkdir(parents=True, exist_ok=True)
    key = str(full)
    if key in _LOCKS:
        return p
    fd = os.open(p, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise PluralignError("another pluralign run is writing this folder; wait for it or give another --out",
                             file=path, field=field) from None
    _LOCKS[key] = fd
    return p


def release_output(path: str | Path) -> None:
    """Drop this process's lock on an output folder (also dropped at exit)."""
    fd = _LOCKS.pop(str(Path(path).resolve()), None)
    if fd is not None:
        os.close(fd)


# ------------------------------------------------------------------------------ output files
def check_replaceable(path: str | Path | None, *, own, what: str, inputs=(), field: str = "--out") -> None:
    """Refuse, before any work, an output file that would replace one of ``inputs`` or an existing
    file that ``own(path)`` does not recognise as an earlier output of the same command (``what``
    names that output in the error)."""
    from pluralign.errors import PluralignError

    if path is None:
        return
    full = Path(path).resolve()
    if any(full == Path(i).resolve() for i in inputs):
        raise PluralignError("is one of this command's inputs; give another file for the output", file=path, field=field)
    if full.is_file() and not own(full):
        raise PluralignError(f"exists and is not {what}; give another file or remove it first", file=path, field=field)


def json_schema_of(path: str | Path) -> str | None:
    """The ``schema`` field of a JSON object file, or None (not JSON, not an object, no schema)."""
    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return doc.get("schema") if isinstance(doc, dict) and isinstance(doc.get("schema"), str) else None


def is_markdown_table_file(path: str | Path, *, notes: bool = False) -> bool:
    """Whether ``path`` holds what the table commands write: Markdown table rows (``notes``: the
    first non-blank line is a table row, other lines may be notes)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(1 << 20)
        lines = [line.strip() for line in head.decode("utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError):
        return False
    if not lines:
        return False
    return lines[0].startswith("|") if notes else all(line.startswith("|") for line in lines)
