"""Zero-shot profiles: how well does a model answer for people whose *kind* it never saw?

The CuMA paper's protocol on the respondent probe: within each cultural cluster (here the
Inglehart–Welzel zone of the respondent's country, :mod:`pluralign.data.culture`), hold out
attribute combinations (age band × sex × education by default), and hold out whole countries;
train on the rest; evaluate on the held-out respondents. Beside it a *full supervision* run is
trained where the same combinations and countries are seen: half of the held-out people (by
distinct profile) stay in its training part, the other half is its test part. Both runs are
evaluated on their test parts, and :func:`zeroshot_table` compares them on the rows both scored
(the full-supervision test part, a subset of the zero-shot one).

:func:`build_zeroshot_split` makes the split with the existing ``profile`` split kind of
:mod:`pluralign.data.splits` (whole distinct profiles go to one part) and explicit test units:
:func:`write_zeroshot_split` writes two ``pluralign train --config`` files (``train-zeroshot.json``,
``train-full.json``) holding ``data``, ``task``, ``split: profile`` and ``test_units`` (the held-out
profile keys: demographic attributes, no respondent ids), and ``zeroshot-split.json``, the
description (held-out countries and combinations per zone, sizes).

The table classifies each evaluated row from the zero-shot run's own rebuilt training part: a
*held-out country* when its country has no training row, else a *held-out combination* when its
(zone, combination) has none; the full-supervision run's training part tells how many of those
combinations it did see.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from pluralign.errors import PluralignError

SCHEMA = "pluralign.analysis.zeroshot/1"
ATTRS = ("age_band", "sex", "education")
OFF_MAP = "off the map"


def _zone(country) -> str:
    from pluralign.analysis._prep import zone_of

    return zone_of(country) or OFF_MAP


def combination(profile, attrs: Sequence[str] = ATTRS) -> tuple | None:
    vals = tuple(getattr(profile, a, None) for a in attrs)
    return None if any(v is None for v in vals) else vals


@dataclass
class ZeroShotSplit:
    data: str
    attrs: tuple
    seed: int
    enrich_profile: bool
    held_countries: dict = field(default_factory=dict)  # zone -> [country]
    held_combos: dict = field(default_factory=dict)  # zone -> [combination tuple]
    zeroshot_test: list = field(default_factory=list)  # profile keys
    full_test: list = field(default_factory=list)  # profile keys (a subset of zeroshot_test)
    sizes: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {
            "schema": SCHEMA + "#split", "data": self.data, "attributes": list(self.attrs), "seed": self.seed,
            "enrich_profile": self.enrich_profile,
            "held_out_countries": self.held_countries,
            "held_out_combinations": {z: [dict(zip(self.attrs, c)) for c in cs] for z, cs in self.held_combos.items()},
            "sizes": self.sizes,
        }


def build_zeroshot_split(ds, *, data: str = "", attrs: Sequence[str] = ATTRS, combo_frac: float = 0.2, countries_per_zone: int = 1,
                         holdout_countries: Sequence[str] | None = None, seed: int = 0, enrich_profile: bool = False) -> ZeroShotSplit:
    """The zero-shot and full-supervision splits of the individual dataset ``ds`` (see the module
    docstring). Countries: ``holdout_countries``, else per zone with at least two countries the
    ``countries_per_zone`` ones first in the seeded hash order (at least one country of a zone
    stays in training). Combinations: per zone, among the combinations of at least two distinct
    profiles outside the held-out countries, those whose hash is below ``combo_frac`` (at least one
    per zone that has such a combination). Countries and combinations with a profile key holding a
    comma are not chosen: ``pluralign eval --adapter`` passes a run's test units on as a
    comma-separated list, which would split such a key."""
    from pluralign.data.countries import country_name
    from pluralign.data.profile import PROFILE_FIELDS
    from pluralign.data.splits import unit_fraction

    if ds.kind != "individual":
        raise PluralignError("the zero-shot profile split needs individual (respondent-level) data, e.g. wvs-probe",
                             file=ds.source, field="--data")
    bad = [a for a in attrs if a not in PROFILE_FIELDS or a == "country"]
    if bad or not attrs:
        raise PluralignError(f"unknown profile attribute {bad[0] if bad else '(none)'} (valid: "
                             f"{', '.join(f for f in PROFILE_FIELDS if f != 'country')})", field="--attributes")
    if not 0 < combo_frac < 1:
        raise PluralignError(f"must be in (0, 1), got {combo_frac}", field="--combo-frac")
    if enrich_profile:
        from pluralign.data.culture import enrich_dataset

        ds = enrich_dataset(ds)
    profiles = {}
    rows_of: dict[str, int] = defaultdict(int)
    for e in ds.examples:
        profiles.setdefault(e.profile.key(), e.profile)
        rows_of[e.profile.key()] += 1
    by_country: dict[str, list[str]] = defaultdict(list)
    for k, p in profiles.items():
        by_country[p.country or "<none>"].append(k)
    countries_by_zone: dict[str, list[str]] = defaultdict(list)
    for c in sorted(by_country):
        countries_by_zone[_zone(c)].append(c)
    held_c: dict[str, list[str]] = {}
    if holdout_countries:
        want = [country_name(c) for c in holdout_countries]
        unknown = [c for c in want if c not in by_country]
        if unknown:
            raise PluralignError(f"no respondents from {', '.join(unknown)} (have: {', '.join(sorted(by_country)[:20])} ...)",
                                 file=ds.source, field="--holdout-countries")
        for c in want:
            held_c.setdefault(_zone(c), []).append(c)
    elif countries_per_zone > 0:
        for z, cs in countries_by_zone.items():
            ok = [c for c in cs if not any("," in k for k in by_country[c])]
            if len(cs) >= 2 and ok:
                n = min(countries_per_zone, len(cs) - 1, len(ok))
                held_c[z] = sorted(sorted(ok, key=lambda c: unit_fraction(seed, f"zs-country|{c}"))[:n])
    held_country_set = {c for cs in held_c.values() for c in cs}
    combos: dict[tuple[str, tuple], list[str]] = defaultdict(list)
    for k, p in profiles.items():
        if (p.country or "<none>") in held_country_set:
            continue
        cb = combination(p, attrs)
        if cb is not None:
            combos[(_zone(p.country), cb)].append(k)
    held_cb: dict[str, list[tuple]] = {}
    by_zone: dict[str, list[tuple]] = defaultdict(list)
    for (z, cb), keys in combos.items():
        if len(keys) >= 2 and not any("," in k for k in keys):
            by_zone[z].append(cb)
    for z, cbs in sorted(by_zone.items()):
        frac = {cb: unit_fraction(seed, f"zs-combo|{z}|{'|'.join(cb)}") for cb in cbs}
        pick = [cb for cb in cbs if frac[cb] < combo_frac] or [min(cbs, key=lambda cb: frac[cb])]
        held_cb[z] = sorted(pick)
    zs_test, full_test = [], []

    def halves(keys: list[str]) -> None:
        keys = sorted(keys, key=lambda k: unit_fraction(seed, f"zs-full|{k}"))
        zs_test.extend(keys)
        if len(keys) >= 2:
            full_test.extend(keys[: len(keys) // 2])

    for cs in held_c.values():
        for c in cs:
            halves(by_country[c])
    for z, cbs in held_cb.items():
        for cb in cbs:
            halves(combos[(z, cb)])
    if not zs_test:
        raise PluralignError("nothing to hold out (no zone with two countries or a combination of two profiles)", file=ds.source)
    sizes = {
        "profiles": len(profiles), "rows": len(ds.examples),
        "zeroshot": {"test_profiles": len(zs_test), "test_rows": sum(rows_of[k] for k in zs_test),
                     "train_profiles": len(profiles) - len(zs_test)},
        "full": {"test_profiles": len(full_test), "test_rows": sum(rows_of[k] for k in full_test),
                 "train_profiles": len(profiles) - len(full_test)},
        "held_out_countries": len(held_country_set), "held_out_combinations": sum(len(v) for v in held_cb.values()),
    }
    return ZeroShotSplit(data=data or ds.name, attrs=tuple(attrs), seed=seed, enrich_profile=enrich_profile, held_countries=held_c,
                         held_combos=held_cb, zeroshot_test=sorted(zs_test), full_test=sorted(full_test), sizes=sizes)


def write_zeroshot_split(split: ZeroShotSplit, out) -> dict:
    """``zeroshot-split.json``, ``train-zeroshot.json`` and ``train-full.json`` in ``out``."""
    from pluralign.io import atomic_write_json

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    base = {"data": split.data, "task": "individual", "split": "profile", "enrich_profile": split.enrich_profile, "seed": split.seed}
    paths = {
        "split": atomic_write_json(out / "zeroshot-split.json", split.describe()),
        "zeroshot": atomic_write_json(out / "train-zeroshot.json", dict(base, test_units=split.zeroshot_test)),
        "full": atomic_write_json(out / "train-full.json", dict(base, test_units=split.full_test)),
    }
    return paths


# --------------------------------------------------------------------------------- the table
def _individual_result(run) -> tuple[Path, dict]:
    for f, r in zip(run.eval_files, run.results()):
        if r["dataset"]["kind"] == "individual" and isinstance(r.get("predictions"), list):
            return f, r
    raise PluralignError("no individual-data evaluation with predictions in this run (the zero-shot table needs respondent rows)",
                         file=run.eval_dir or run.path)


def _metrics(rows: list[dict], items: dict) -> dict:
    from pluralign.evaluation import metrics as M

    if not rows:
        return {"accuracy": None, "macro_f1": None, "macro_f1_option_label": None, "emd": None}
    ps = [np.asarray(r["probs"], dtype=float) for r in rows]
    gold = [int(r["answer"]) for r in rows]
    acc = float(np.mean([M.mode_credit(p, a) for p, a in zip(ps, gold)]))
    t_pred, t_w, t_gold, t_q = M.expand_ties(ps, gold, [r["item_id"] for r in rows])
    f1 = M.macro_f1_question_option(t_pred, t_gold, t_q, t_w)  # the results key macro_f1: (question, option) is the class
    f1_label = M.macro_f1_option_label(t_pred, t_gold, t_w)  # option numbers pooled across questions
    cells: dict[tuple, list[int]] = defaultdict(list)
    for j, r in enumerate(rows):
        cells[(r["group"], r["item_id"])].append(j)
    emds = []
    for (g, q), js in cells.items():
        pm = np.mean([ps[j] for j in js], axis=0)
        h = np.bincount([gold[j] for j in js], minlength=len(pm)).astype(float)
        it = items.get(q)
        emds.append(M.emd(pm, h, True if it is None else it.ordinal))
    return {"accuracy": acc, "macro_f1": f1, "macro_f1_option_label": f1_label, "emd": float(np.mean(emds))}


SUBSETS = ("held-out combination", "held-out country", "all held out")
METRICS = (("accuracy", "accuracy"), ("macro_f1", "macro-F1 (question, option)"), ("macro_f1_option_label", "macro-F1 (option label)"),
           ("emd", "EMD"))


def zeroshot_table(full_run, zs_run, *, attrs: Sequence[str] = ATTRS) -> dict:
    """Full supervision vs zero-shot on the rows both runs scored, per held-out kind."""
    from pluralign.analysis.runs import rebuild_split

    ff, fr = _individual_result(full_run)
    zf, zr = _individual_result(zs_run)
    rec = zs_run.split_record()
    if rec is None:
        raise PluralignError("the zero-shot run records no split (no split.json)", file=zs_run.path)
    ds, sp = rebuild_split(rec)
    train_countries = {e.profile.country for e in sp.train.examples}
    train_combos = {(_zone(e.profile.country), combination(e.profile, attrs)) for e in sp.train.examples}
    full_combos, full_countries = None, None
    frec = full_run.split_record()
    if frec is not None:
        _, fsp = rebuild_split(frec)
        full_combos = {(_zone(e.profile.country), combination(e.profile, attrs)) for e in fsp.train.examples}
        full_countries = {e.profile.country for e in fsp.train.examples}
    prof = {e.respondent_id: e.profile for e in ds.examples}
    fz = {(str(r["respondent_id"]), r["item_id"]): r for r in fr["predictions"] if r.get("probs") is not None}
    zz = {(str(r["respondent_id"]), r["item_id"]): r for r in zr["predictions"] if r.get("probs") is not None}
    common = sorted(set(fz) & set(zz))
    if not common:
        raise PluralignError(f"the two runs share no scored (respondent, question) row: {ff} vs {zf}", file=zf)
    subset_rows: dict[str, list] = {s: [] for s in SUBSETS}
    seen_rows = 0
    seen_by_full = {s: 0 for s in SUBSETS}
    unknown = 0
    for key in common:
        p = prof.get(key[0])
        if p is None:
            unknown += 1
            continue
        zone_cb = (_zone(p.country), combination(p, attrs))
        if p.country not in train_countries:
            kind = "held-out country"
            seen_full = full_countries is not None and p.country in full_countries
        elif zone_cb not in train_combos:
            kind = "held-out combination"
            seen_full = full_combos is not None and zone_cb in full_combos
        else:
            seen_rows += 1
            continue
        subset_rows[kind].append(key)
        subset_rows["all held out"].append(key)
        seen_by_full[kind] += int(seen_full)
        seen_by_full["all held out"] += int(seen_full)
    table = []
    for s in SUBSETS:
        keys = subset_rows[s]
        mf = _metrics([fz[k] for k in keys], ds.items)
        mz = _metrics([zz[k] for k in keys], ds.items)
        row = {"subset": s, "rows": len(keys), "respondents": len({k[0] for k in keys}),
               "seen_by_full_supervision": (seen_by_full[s] / len(keys)) if keys else None}
        for m, _ in METRICS:
            row[m] = {"full": mf[m], "zeroshot": mz[m],
                      "gap": (mz[m] - mf[m]) if mf[m] is not None and mz[m] is not None else None}
        table.append(row)
    notes = []
    if seen_rows:
        notes.append(f"{seen_rows} common rows have a country and combination the zero-shot run trained on (left out)")
    if unknown:
        notes.append(f"{unknown} common rows name respondents absent from the rebuilt data (left out)")
    return {"schema": SCHEMA, "full": {"run": str(full_run.path), "result": str(ff)}, "zeroshot": {"run": str(zs_run.path), "result": str(zf)},
            "attributes": list(attrs), "common_rows": len(common), "table": table, "notes": notes}


def table_rows(res: dict) -> tuple[list[str], list[list]]:
    header = ["held out", "rows", "respondents", "seen by full supervision"]
    for _, lab in METRICS:
        header += [f"{lab} full", f"{lab} zero-shot", f"{lab} gap (ZS - full)"]
    rows = []
    for r in res["table"]:
        row = [r["subset"], r["rows"], r["respondents"], _nan(r["seen_by_full_supervision"])]
        for m, _ in METRICS:
            row += [_nan(r[m]["full"]), _nan(r[m]["zeroshot"]), _nan(r[m]["gap"])]
        rows.append(row)
    return header, rows


def _nan(v):
    return float("nan") if v is None or (isinstance(v, float) and not math.isfinite(v)) else v


__all__ = ["SCHEMA", "ATTRS", "ZeroShotSplit", "build_zeroshot_split", "write_zeroshot_split", "zeroshot_table", "table_rows", "combination"]
