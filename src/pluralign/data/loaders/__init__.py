"""Dataset loaders, each for an official public format, behind one registry.

``load_dataset(spec)`` accepts a registered name (``wvs-shares``, ``wvs-probe``, …), optionally
with a path (``wvs-probe:/path/to/individual_answers.tsv``), or a bare path whose format is
detected. Adding a format is one module that calls :func:`register_loader`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pluralign.data.tasks import SurveyDataset
from pluralign.errors import PluralignError

Loader = Callable[..., SurveyDataset]
Detector = Callable[[Path], bool]

_LOADERS: dict[str, tuple[Loader, Detector | None, str]] = {}


def register_loader(name: str, *, detect: Detector | None = None, help: str = "") -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        _LOADERS[name] = (fn, detect, help)
        return fn

    return deco


def available_loaders() -> dict[str, str]:
    _import_all()
    return {k: v[2] for k, v in sorted(_LOADERS.items())}


def load_dataset(spec: str | Path, *, strict: bool | None = None, **kwargs) -> SurveyDataset:
    """Load by ``name``, ``name:path`` or ``path`` (format detected).

    ``strict=True`` makes a loader that skips unusable cells (and counts them in
    ``meta["dropped"]``) fail on the first one instead; it is passed only to loaders that take it
    (the others have no skip policy: they refuse bad cells anyway)."""
    _import_all()
    if strict is not None:
        kwargs["strict"] = strict
    s = str(spec)
    name, _, path = s.partition(":") if ":" in s and s.split(":", 1)[0] in _LOADERS else (None, "", s)
    if name is None and s in _LOADERS:
        name, path = s, ""
    if name is not None:
        fn = _LOADERS[name][0]
        kwargs = _accepted(fn, kwargs)
        return fn(Path(path), **kwargs) if path else fn(**kwargs)
    p = Path(path)
    if not p.exists():
        raise PluralignError(
            f"no such dataset file or registered name (names: {', '.join(sorted(_LOADERS))})", file=p
        )
    for key, (fn, detect, _) in _LOADERS.items():
        if detect is not None and detect(p):
            return fn(p, **_accepted(fn, kwargs))
    raise PluralignError(
        f"cannot tell the format of this file; prefix it with a loader name ({', '.join(sorted(_LOADERS))}), e.g. wvs-probe:{p}",
        file=p,
    )


def _accepted(fn, kwargs: dict) -> dict:
    """``kwargs`` less a ``strict`` the loader does not take."""
    if "strict" not in kwargs:
        return kwargs
    import inspect

    params = inspect.signature(fn).parameters
    if "strict" in params or any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return kwargs
    return {k: v for k, v in kwargs.items() if k != "strict"}


def _import_all() -> None:
    from pluralign.data.loaders import wvs_probe, wvs_shares  # noqa: F401

    for mod in ("worldvaluesbench", "globalopinionqa", "hofstede", "drhur", "opinionqa", "yaml_survey"):
        try:
            __import__(f"pluralign.data.loaders.{mod}")
        except ModuleNotFoundError as e:  # a loader module not written yet
            if e.name != f"pluralign.data.loaders.{mod}":
                raise
