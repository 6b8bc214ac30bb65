"""Build the small aggregated tables shipped in the package from ../shared/data.

Only aggregates are shipped (per-country answer shares and cultural-map coordinates renormalised over valid answers, rounded to
4 decimals; the question texts and option labels); no respondent-level data. Run from the repo root:

    python scripts/build_resources.py [--data ../shared/data]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from pluralign.data.loaders.wvs_shares import CITATION, SHIPPED, load_wvs_shares
from pluralign.io import atomic_write_json


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default="../shared/data")
    args = ap.parse_args()
    ds = load_wvs_shares(Path(args.data) / "wvs7_country_distributions_culturespa")
    shares: dict[str, dict[str, list[float]]] = {}
    for e in ds.examples:
        shares.setdefault(e.group_id, {})[e.item_id] = [round(p, 4) for p in e.probs]
    out = {
        "citation": CITATION,
        "note": "Per-country WVS-7 answer shares over valid answers (Don't know / No answer removed), "
        "4 decimals. Aggregates only; no respondent-level data.",
        "items": [it.to_dict() for it in ds.items.values()],
        "shares": shares,
    }
    atomic_write_json(SHIPPED, out, indent=None)
    print(f"wrote {SHIPPED} ({SHIPPED.stat().st_size / 1e6:.2f} MB): {len(shares)} countries, {len(ds.items)} items")
    # the Inglehart-Welzel cultural map: latest-wave coordinates and zone per country (aggregates)
    from pluralign.data.culture import SHIPPED as MAP, build_table

    table = build_table(Path(args.data) / "inglehart_welzel_map" / "ethosgpt_indices_with_cultural_region.csv")
    atomic_write_json(MAP, table, indent=1)
    print(f"wrote {MAP}: {len(table['rows'])} countries")


    # every wave's coordinates per country (for --map-before: side information from before the evaluation data's wave)
    from pluralign.data.culture import WAVES, build_wave_table

    waves = build_wave_table(Path(args.data) / "inglehart_welzel_map" / "cultural_map_country_year.csv")
    atomic_write_json(WAVES, waves)
    print(f"wrote {WAVES} ({len(waves['rows'])} country-years)")


if __name__ == "__main__":
    main()
