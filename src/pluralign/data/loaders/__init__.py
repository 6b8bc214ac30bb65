"""Dataset loaders, each for an official public format, behind one registry.

``load_dataset(spec)`` accepts a registered name (``wvs-shares``, ``wvs-probe``, …), optionally
with a path (``wvs-probe:/path/to/individual_answers.tsv``), or a bare path whose format is
detected. Adding a format is one module that calls :func:`register_loader`.

Open-ended preference / prompt data (PRISM, Community Alignment, BLEnD; a
:class:`~pluralign.data.preferences.PreferenceDataset`, not a survey) registers with
:func:`register_preference_loader` and loads with :func:`load_preferences`; those names are
listed by :func:`available_loaders` too, and ``load_dataset`` refuses them with a pointer to the
commands that use them (``pluralign train --stage sft|dpo|grpo``, ``pluralign generate-eval``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from pluralign.data.tasks import SurveyDataset
from pluralign.errors import PluralignError
from pluralign.registry import Registry

Loader = Callable[..., SurveyDataset]
Detector = Callable[[Path], bool]

#: the loader modules, imported on the first lookup of either registry (each registers its loaders)
_MODULES = tuple(f"pluralign.data.loaders.{m}" for m in (
    "wvs_probe", "wvs_shares", "worldvaluesbench", "globalopinionqa", "hofstede", "drhur", "opinionqa", "yaml_survey",
    "prism", "community_alignment", "blend"))

#: survey loaders: name -> (loader, detector or None, help)
LOADERS: Registry[tuple[Loader, Detector | None, str]] = Registry("loader", field="data", modules=_MODULES)
_LOADERS = LOADERS


def register_loader(name: str, *, detect: Detector | None = None, help: str = "") -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        LOADERS.add(name, (fn, detect, help))
        return fn

    return deco


def available_loaders() -> dict[str, str]:
    out = {k: v[2] for k, v in _LOADERS.items()}
    out.update({k: f"(preference data: train --stage sft/dpo/grpo, generate-eval) {v[2]}" for k, v in _PREF_LOADERS.items()})
    return dict(sorted(out.items()))


def load_dataset(spec: str | Path, *, strict: bool | None = None, **kwargs) -> SurveyDataset:
    """Load by ``name``, ``name:path`` or ``path`` (format detected).

    ``strict=True`` makes a loader that skips unusable cells (and counts them in
    ``meta["dropped"]``) fail on the first one instead; it is passed only to loaders that take it
    (the others have no skip policy: they refuse bad cells anyway)."""
    if strict is not None:
        kwargs["strict"] = strict
    s = str(spec)
    if s.split(":", 1)[0] in _PREF_LOADERS:
        _not_a_survey(s.split(":", 1)[0])
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
    if is_preference_spec(p):
        _not_a_survey(str(p))
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


# --------------------------------------------------------------------------- preference / prompt data
def _not_a_survey(what: str):
    raise PluralignError(
        f"{what} is open-ended preference data, not a survey; use it with `pluralign train --stage sft|dpo|grpo --data ...` "
        "or `pluralign generate-eval --data ...`",
        field="data",
    )


#: preference / prompt data loaders: name -> (loader, detector or None, help)
PREFERENCE_LOADERS: Registry[tuple[Callable, Detector | None, str]] = Registry(
    "preference loader", field="data", modules=_MODULES)
_PREF_LOADERS = PREFERENCE_LOADERS


def register_preference_loader(name: str, *, detect: Detector | None = None, help: str = ""):
    """Register a loader returning a :class:`~pluralign.data.preferences.PreferenceDataset`."""

    def deco(fn):
        PREFERENCE_LOADERS.add(name, (fn, detect, help))
        return fn

    return deco


def available_preference_loaders() -> dict[str, str]:
    return {k: v[2] for k, v in sorted(_PREF_LOADERS.items())}


def _pref_resolve(spec: str):
    """``(loader, path or None)`` of a preference spec, or None when it is not one."""
    s = str(spec)
    head, sep, rest = s.partition(":")
    if head in _PREF_LOADERS:
        return _PREF_LOADERS[head][0], (rest if sep and rest else None)
    p = Path(s)
    if p.exists():  # the preference detectors are specific (PRISM / BLEnD folders, Community Alignment header)
        for fn, detect, _ in _PREF_LOADERS.values():
            if detect is not None and detect(p):
                return fn, s
    return None


def is_preference_spec(spec: str | Path) -> bool:
    """Whether ``spec`` names preference / prompt data (a registered name, ``name:path`` or a detected path)."""
    try:
        return _pref_resolve(str(spec)) is not None
    except (OSError, ValueError):
        return False


def load_preferences(spec: str | Path, *, strict: bool | None = None, **kwargs):
    """Load preference / prompt data by ``name``, ``name:path`` or a detected ``path``."""
    hit = _pref_resolve(str(spec))
    if hit is None:
        names = ", ".join(sorted(_PREF_LOADERS))
        p = Path(str(spec))
        if not p.exists() and str(spec).split(":", 1)[0] not in _LOADERS:
            raise PluralignError(f"no such preference dataset file or registered name (names: {names})", file=p, field="data")
        raise PluralignError(f"not preference data (names: {names}; e.g. prism:/data/prism)", file=str(spec), field="data")
    fn, path = hit
    if strict is not None:
        kwargs["strict"] = strict
    kwargs = _accepted(fn, kwargs)
    return fn(Path(path), **kwargs) if path else fn(**kwargs)


