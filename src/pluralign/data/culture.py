"""The Inglehart–Welzel cultural map: where a country sits culturally, as data.

A small table shipped with the package (``data/resources/cultural_map.json``, built by
``scripts/build_resources.py`` from the WVS Association's published map file as transcribed in
EthosGPT, ``../shared/data/inglehart_welzel_map``): for each country its latest-wave coordinates on
the two map axes, traditional → secular-rational values (``trad_secular``) and survival →
self-expression values (``surv_selfexp``), and its zone of the 2023 map (8 zones; the zone
labels come from EthosGPT's assignment and are not independently verified).

Every function takes ``before``: with a year, a country's coordinates are those of its latest
survey year strictly before it (``cultural_map_waves.json``, the official file's country-years
1981–2022), so side information for WVS-7 data (fieldwork 2017–2022) can come from earlier waves
(``before=2017``); a country with no earlier wave is off the map. ``None``: the latest coordinates.

Three uses:

* :func:`enrich_profile` — profile enrichment (off by default; ``--enrich-profile`` on the CLI): a
  country profile gains its map position and zone as extra attributes, so they appear in the
  persona text (:meth:`Profile.describe`) and reach the router through the numeric encoder;
* :func:`culture_features` — the numeric features of a profile for the router
  (:class:`pluralign.models.profile_encoder.CultureMapEncoder`);
* :func:`nearest_groups` — the cultural-map nearest-neighbour reference predictor of evaluation
  (the mean answer of the k training countries nearest on the map).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass


from pluralign.data.countries import country_name, to_iso3
from pluralign.io import read_json
from pluralign.paths import RESOURCES

SHIPPED = RESOURCES / "cultural_map.json"
#: every wave's coordinates per country (``--map-before``), from the official file's country-years
WAVES = RESOURCES / "cultural_map_waves.json"
CITATION = (
    "Inglehart–Welzel World Cultural Map, EVS/WVS 2023 (WVS Association, document F00016619; "
    "Haerpfer et al. 2022; EVS 2021), latest wave per country, as transcribed in EthosGPT "
    "(github.com/sunshineluyao/EthosGPT, data/indices.csv). Zone labels: EthosGPT's assignment, not verified."
)
ENRICH_KEYS = ("cultural map position", "cultural zone")


@dataclass(frozen=True)
class MapEntry:
    iso3: str
    country: str
    year: int
    trad_secular: float
    surv_selfexp: float
    zone: str


@functools.lru_cache(maxsize=1)
def load_map() -> dict[str, MapEntry]:
    """ISO3 code → :class:`MapEntry` of the shipped table."""
    data = read_json(SHIPPED)
    return {
        r["iso3"]: MapEntry(r["iso3"], r["country"], int(r["year"]), float(r["trad_secular"]), float(r["surv_selfexp"]), r["zone"])
        for r in data["rows"]
    }


@functools.lru_cache(maxsize=1)
def load_waves() -> dict[str, list[tuple[int, float, float]]]:
    """ISO3 code → ``[(year, trad_secular, surv_selfexp), ...]`` sorted by year (every wave)."""
    out: dict[str, list[tuple[int, float, float]]] = {}
    for r in read_json(WAVES)["rows"]:
        out.setdefault(r["iso3"], []).append((int(r["year"]), float(r["trad_secular"]), float(r["surv_selfexp"])))
    return {k: sorted(v) for k, v in out.items()}


@functools.lru_cache(maxsize=4096)
def _entry_before(iso: str, before: int) -> MapEntry | None:
    latest = load_map().get(iso)
    waves = [w for w in load_waves().get(iso, []) if w[0] < before]
    if latest is None or not waves:
        return None
    year, ts, se = waves[-1]
    return MapEntry(iso, latest.country, year, ts, se, latest.zone)


def check_before(before) -> int | None:
    """``before`` as a year (None stays None); one clear error for anything else."""
    from pluralign.errors import PluralignError

    if before is None:
        return None
    if isinstance(before, bool) or not isinstance(before, int) or not 1900 <= before <= 2100:
        raise PluralignError(f"must be a year such as 2017, got {before!r}", field="--map-before")
    return before


@functools.lru_cache(maxsize=1)
def zones() -> tuple[str, ...]:
    return tuple(sorted({e.zone for e in load_map().values()}))


def lookup(country: str | None, before: int | None = None) -> MapEntry | None:
    """The map entry of a country name or ISO3 code (with ``before``: from its latest survey year
    before that year); ``None`` when the map does not cover it."""
    if not country:
        return None
    iso = to_iso3(country)
    if not iso:
        return None
    return load_map().get(iso) if before is None else _entry_before(iso, int(before))


def covers(countries, before: int | None = None) -> bool:
    return all(lookup(c, before) is not None for c in countries)


def enrich_profile(profile, before: int | None = None):
    """The profile with its cultural-map position and zone added as extra attributes (unchanged
    when it has no country or the map does not cover it)."""
    e = lookup(profile.country, before)
    if e is None:
        return profile
    extra = dict(profile.extra)
    extra["cultural map position"] = (
        f"traditional-secular {e.trad_secular:+.2f}, survival-self-expression {e.surv_selfexp:+.2f} "
        f"(Inglehart-Welzel map, {e.year})"
    )
    extra["cultural zone"] = e.zone
    return profile.replace(extra=tuple(sorted(extra.items())))


def enrich_dataset(ds, before: int | None = None):
    """A copy of ``ds`` whose examples carry enriched profiles (see :func:`enrich_profile`)."""
    import dataclasses

    cache: dict[str, object] = {}

    def enr(p):
        k = p.key()
        if k not in cache:
            cache[k] = enrich_profile(p, before)
        return cache[k]

    exs = [dataclasses.replace(e, profile=enr(e.profile)) for e in ds.examples]
    return ds.subset(exs, name=ds.name)


def culture_features(country: str | None, before: int | None = None) -> list[float]:
    """Numeric features of a country for the router: the two map coordinates, a one-hot of the zone
    and an ``on_map`` flag (all zeros but the flag's 0 when the map does not cover the country)."""
    zs = zones()
    e = lookup(country, before)
    if e is None:
        return [0.0] * (2 + len(zs) + 1)
    onehot = [1.0 if z == e.zone else 0.0 for z in zs]
    return [e.trad_secular, e.surv_selfexp, *onehot, 1.0]


def feature_dim() -> int:
    return 2 + len(zones()) + 1


def map_distance(a: str, b: str, before: int | None = None) -> float:
    ea, eb = lookup(a, before), lookup(b, before)
    if ea is None or eb is None:
        return math.inf
    return math.hypot(ea.trad_secular - eb.trad_secular, ea.surv_selfexp - eb.surv_selfexp)


def nearest_groups(country: str, candidates, k: int = 3, before: int | None = None) -> list[str]:
    """The ``k`` candidates nearest to ``country`` on the map (Euclidean, both axes), nearest first;
    candidates off the map are ignored; ``[]`` when ``country`` is off the map."""
    if lookup(country, before) is None:
        return []
    scored = sorted((map_distance(country, c, before), c) for c in candidates if lookup(c, before) is not None and c != country)
    return [c for _, c in scored[:k]]


def build_table(csv_path) -> dict:
    """The shipped table from EthosGPT's ``indices.csv`` (see ``scripts/build_resources.py``)."""
    import csv
    import re

    rows = []
    with open(csv_path, encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            iso = to_iso3(r["Country"])
            if iso is None:
                continue
            m = re.search(r"\((\d{4})\)", r["Year"])
            rows.append({
                "iso3": iso, "country": country_name(iso), "year": int(m.group(1)) if m else None,
                "trad_secular": round(float(r["Traditional_vs_Secular"]), 4),
                "surv_selfexp": round(float(r["Survival_vs_SelfExpression"]), 4),
                "zone": r["Cultural_Region"].strip(),
            })
    return {"citation": CITATION, "columns": ["iso3", "country", "year", "trad_secular", "surv_selfexp", "zone"],
            "rows": sorted(rows, key=lambda r: r["iso3"])}


def build_wave_table(csv_path) -> dict:
    """Every country-year with map coordinates, from ``cultural_map_country_year.csv`` (the official
    file F00016619's two blocks aligned; see ``scripts/build_resources.py``)."""
    import csv

    rows = []
    with open(csv_path, encoding="utf-8-sig") as fh:
        for r in csv.DictReader(fh):
            iso = to_iso3(r["country"])
            if iso is None or not r.get("tradagg") or not r.get("survsagg"):
                continue
            rows.append({"iso3": iso, "year": int(r["year"]), "trad_secular": round(float(r["tradagg"]), 4),
                         "surv_selfexp": round(float(r["survsagg"]), 4)})
    rows.sort(key=lambda r: (r["iso3"], r["year"]))
    return {"citation": CITATION.replace("latest wave per country, as transcribed in EthosGPT (github.com/sunshineluyao/EthosGPT, "
                                         "data/indices.csv)", "every country-year of the official file"),
            "columns": ["iso3", "year", "trad_secular", "surv_selfexp"], "rows": rows}


__all__ = ["MapEntry", "load_map", "lookup", "covers", "enrich_profile", "enrich_dataset", "culture_features",
           "feature_dim", "nearest_groups", "map_distance", "zones", "CITATION", "load_waves", "check_before"]
