"""What the routing analyses (topology, overlap) share: the run's adapted model, the units whose
routing is compared (countries of group data; distinct respondent profiles of individual data)
and their prompts, built exactly as the run's evaluation builds them."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

#: profile attributes whose grouping of respondents the topology tests (individual data)
ATTRIBUTES = ("age_band", "sex", "education")
PARTS = ("all", "test", "train")


@dataclass
class Unit:
    id: str
    profile: Profile
    labels: dict = field(default_factory=dict)  # label kind (zone, age_band, ...) -> value or None


def zone_of(country: str | None) -> str | None:
    from pluralign.data.culture import lookup

    e = lookup(country)
    return e.zone if e is not None else None


def _natural(s: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def spread(ids: Sequence[str], n: int | None) -> list[str]:
    """``n`` ids spread evenly over ``ids`` in questionnaire order (all when ``n`` is None)."""
    ids = sorted(ids, key=_natural)
    if not n or n >= len(ids):
        return ids
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def load_run_data(run, part: str = "all"):
    """``(dataset selection, examples of part)`` of the run, rebuilt from its split record."""
    from pluralign.analysis.runs import rebuild_split

    if part not in PARTS:
        raise PluralignError(f"unknown part {part!r} (valid: {', '.join(PARTS)})", field="--part")
    rec = run.split_record()
    if rec is None:
        raise PluralignError("the run records no data selection (no split.json, no adapter record)", file=run.path)
    ds, sp = rebuild_split(rec)
    exs = {"all": ds.examples, "test": sp.test.examples, "train": sp.train.examples}[part]
    return ds, list(exs)


def units_of(ds, examples, *, max_units: int | None = None, seed: int = 0) -> list[Unit]:
    """One unit per group (group data) or per distinct respondent profile (individual data; the
    ids are ``profile N``, never the respondent ids). More than ``max_units``: a hashed subset."""
    from pluralign.data.splits import unit_fraction

    units: dict[str, Unit] = {}
    if ds.kind == "distributional":
        for e in examples:
            if e.group not in units:
                units[e.group] = Unit(e.group, e.profile, {"zone": zone_of(e.profile.country)})
        keys = sorted(units)
    else:
        for e in examples:
            k = e.profile.key()
            if k not in units:
                labels = {"zone": zone_of(e.profile.country), **{a: getattr(e.profile, a) for a in ATTRIBUTES}}
                units[k] = Unit("", e.profile, labels)
        keys = sorted(units)
    if max_units and len(keys) > max_units:
        keys = sorted(keys, key=lambda k: unit_fraction(seed, k))[:max_units]
        keys = sorted(keys)
    out = [units[k] for k in keys]
    if ds.kind == "individual":
        for i, u in enumerate(out, start=1):
            u.id = f"profile {i}"
    if not out:
        raise PluralignError("no groups in the selected part of the run's data", field="--part")
    return out


def unit_prompts(tok, units: Sequence[Unit], items, cfg) -> tuple[list[str], list[Profile], list[int], list[int]]:
    """Every unit asked every item with the run's prompt method, labels and chat template:
    ``(prompts, profiles, unit index, item index)``."""
    import numpy as np

    from pluralign.data.tasks import GroupExample
    from pluralign.evaluation.methods import get_method
    from pluralign.evaluation.scoring import option_labels
    from pluralign.models.chat import build_chat_prompt

    if cfg.method not in ("vanilla", "persona"):
        raise PluralignError(f"routing analyses build vanilla or persona prompts, not {cfg.method!r}", field="method")
    method = get_method(cfg.method)
    prompts, profiles, ui, qi = [], [], [], []
    for a, u in enumerate(units):
        for b, item in enumerate(items):
            labs = option_labels(item.n_options, cfg.labels)
            ex = GroupExample(group_id=u.id, profile=u.profile, item_id=item.id, probs=tuple(np.full(item.n_options, 1 / item.n_options)))
            prompts.append(build_chat_prompt(tok, method.messages(ex, item, labs), use_chat_template=cfg.chat_template))
            profiles.append(u.profile)
            ui.append(a)
            qi.append(b)
    return prompts, profiles, ui, qi


def load_run_model(run, *, model: str | None = None, device: str = "auto", dtype: str = "auto"):
    """``(adapted model, tokenizer, profile_kwargs)`` of the run's adapter on its backbone."""
    from pluralign.adapters import load_adapter_for_eval
    from pluralign.adapters.checkpoint import read_adapter_config, record_file
    from pluralign.models import load_backbone

    if run.adapter is None:
        raise PluralignError("the run has no adapter/ folder (a `pluralign train --out` folder is needed)", file=run.path)
    meta = read_adapter_config(run.adapter)
    if not (meta.get("config") or {}).get("n_experts"):
        raise PluralignError(f"{meta['method']} is a dense method: it has no router to record", file=record_file(run.adapter),
                             field="method")
    name = model or run.model_name()
    if not name:
        raise PluralignError("the run names no backbone; pass --model", file=run.path, field="--model")
    base, tok = load_backbone(name, dtype=dtype, device=device)
    m, profile_kwargs = load_adapter_for_eval(base, run.adapter, tokenizer=tok)
    return m, tok, profile_kwargs


__all__ = ["Unit", "ATTRIBUTES", "PARTS", "zone_of", "spread", "load_run_data", "units_of", "unit_prompts", "load_run_model"]
