"""Which data a run used, independent of the folder it was started from: ``--data`` with its path
made absolute, and the SHA-256 of every file behind it, so that a resumed run can tell that the
data changed and a record read elsewhere names the same files."""

from __future__ import annotations

import hashlib
from pathlib import Path

from pluralign.errors import PluralignError

#: at most this many files of a data folder are hashed (a folder with more is recorded without hashes)
MAX_FILES = 2000


def _split(spec: str) -> tuple[str | None, str]:
    """``(loader name or None, path part)`` of a ``--data`` value."""
    from pluralign.data.loaders import available_loaders

    names = available_loaders()
    if spec in names:
        return spec, ""
    head, sep, rest = spec.partition(":")
    if sep and head in names:
        return head, rest
    return None, spec


def absolute_spec(spec: str | Path | None) -> str | None:
    """``spec`` with its path part made absolute (``data.yaml`` -> ``/work/data.yaml``,
    ``wvs-probe:x.tsv`` -> ``wvs-probe:/work/x.tsv``); a registered name, and a path that does
    not exist, are returned as given."""
    if spec is None:
        return None
    s = str(spec)
    if not s:
        return s
    name, path = _split(s)
    if not path or not Path(path).exists():
        return s
    full = str(Path(path).resolve())
    return f"{name}:{full}" if name else full


def data_files(spec: str | Path) -> dict[str, str]:
    """Absolute path -> SHA-256 of each file behind ``spec`` (a file, or the files of a folder,
    hidden ones left out); empty for a registered name without a path or a folder of more than
    :data:`MAX_FILES` files."""
    _, path = _split(str(spec))
    if not path:
        return {}
    p = Path(path)
    if p.is_file():
        files = [p]
    elif p.is_dir():
        files = []
        for f in sorted(p.rglob("*")):
            if f.is_file() and not any(part.startswith(".") for part in f.relative_to(p).parts):
                files.append(f)
                if len(files) > MAX_FILES:
                    return {}
    else:
        return {}
    return {str(f.resolve()): _sha256(f) for f in files}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    except OSError as e:
        raise PluralignError(f"cannot read ({e.strerror or e})", file=path) from None
    return h.hexdigest()


def check_recorded_files(recorded: dict | None, digest, *, what: str, record_file: str | Path, field: str) -> None:
    """Refuse (one line naming the file) when a file of ``recorded`` (path -> digest) is gone or
    ``digest(path)`` no longer gives its recorded value; ``what`` names the kind of file."""
    for f, was in (recorded or {}).items():
        p = Path(f)
        if not p.is_file():
            raise PluralignError(f"this {what} of the run is gone (recorded in {record_file}); restore it, or start a new run "
                                 "in another --out", file=f, field=field)
        now = digest(p)
        if now != was:
            raise PluralignError(f"this {what} changed since the run began ({str(was)[:12]}... recorded in {record_file}, now "
                                 f"{str(now)[:12]}...); restore it, or start a new run in another --out", file=f, field=field)


def check_data_files(recorded: dict | None, *, record_file: str | Path, field: str = "--data") -> None:
    """Refuse (one line naming the file) when a file recorded by :func:`data_files` is gone or its
    content changed since the run recorded it."""
    check_recorded_files(recorded, _sha256, what="data file", record_file=record_file, field=field)


def data_label(spec: str | Path, dataset_name: str) -> str:
    """The name an evaluation's result files carry for ``spec``: the dataset's own name, except
    where that is only its loader's name (``wvs-shares`` for any CultureSPA-format folder) and
    ``spec`` gives a path: then the file's stem or the folder's name (``runs/culturespa-2024/`` ->
    ``culturespa-2024``), with characters other than letters, digits, ``.``, ``_`` and ``-``
    replaced by ``-``."""
    import re

    from pluralign.data.loaders import available_loaders

    _, path = _split(str(spec))
    if not path or dataset_name not in available_loaders():
        return dataset_name
    p = Path(path)
    stem = p.stem if p.is_file() else p.resolve().name
    label = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.")
    return label or dataset_name
