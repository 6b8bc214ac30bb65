"""BLEnD answer match under the old rule (raw substrings, before issue 29) and the new one (whole
words after normalisation, ``pluralign.data.loaders.blend.answer_in_response``), side by side.

    python scripts/blend_rematch.py runs/blend/eval-*.json            # stored generate-eval reports
    python scripts/blend_rematch.py --reference [--data blend] [--max-records 300]

Reports: every row of ``outputs`` is matched again by its record id against the human answers of
the report's data (``data``): the adapter's and the base model's answers and the mean-collapse
reference answer (``ref_other_groups_answer``). The old rule is also checked against the match the
report stored (``adapter_match`` ...): ``stored_mismatch`` counts rows where it does not reproduce.

``--reference`` needs no model: it rebuilds the held-out part of ``blend-preference.md``'s split
(question split, 20 % held out, seed 0), scores the model-free reference (the other regions' most
frequent human answer) on the same ``--max-records`` spread of records as ``generate-eval`` and on
the whole held-out part, and counts the DPO pairs whose rejected answer the new rule changes.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import unicodedata
from contextlib import contextmanager
from pathlib import Path

# --------------------------------------------------------------------------- the old rule, verbatim
# pluralign.data.loaders.blend before issue 29 (commit 9aff597): a variant counts when it is a
# substring of the response (also with '-' <-> ' '), or when each of its tokens is among the
# response's tokens (in any order).
_ACUTE = {ord("\N{COMBINING ACUTE ACCENT}"): None}


def _old_lemma(tok: str) -> str:
    if len(tok) > 4 and tok.endswith("ies"):
        return tok[:-3] + "y"
    if len(tok) > 3 and tok.endswith(("ses", "xes", "zes", "ches", "shes")):
        return tok[:-2]
    if len(tok) > 3 and tok.endswith("s") and not tok.endswith(("ss", "us", "is")):
        return tok[:-1]
    return tok


def _old_tokens(text: str) -> list[str]:
    t = unicodedata.normalize("NFD", str(text)).translate(_ACUTE).lower()
    return [_old_lemma(w) for w in re.findall(r"\w+", t)]


def old_answer_in_response(answer: str, response: str) -> bool:
    a = str(answer).strip().lower()
    if not a:
        return False
    if a in response or a.replace("-", " ") in response or a.replace(" ", "-") in response:
        return True
    want = _old_tokens(a)
    have = set(_old_tokens(response))
    return bool(want) and all(w in have for w in want)


@contextmanager
def old_rule():
    """``blend_match`` (and the loader's pairing) with the old ``answer_in_response``."""
    from pluralign.data.loaders import blend as B

    new = B.answer_in_response
    B.answer_in_response = old_answer_in_response
    try:
        yield
    finally:
        B.answer_in_response = new


def both(text, answers, counts) -> tuple[tuple[float, float], tuple[float, float]]:
    """``((old binary, old weighted), (new binary, new weighted))``."""
    from pluralign.data.loaders.blend import blend_match

    if not text:
        return (0.0, 0.0), (0.0, 0.0)
    with old_rule():
        o = blend_match(text, answers, counts)
    return o, blend_match(text, answers, counts)


def _mean(xs):
    return sum(xs) / len(xs) if xs else float("nan")


def _summary(pairs) -> dict:
    """pairs: list of ((ob, ow), (nb, nw))."""
    return {"n": len(pairs), "old": _mean([o[0] for o, _ in pairs]), "new": _mean([n[0] for _, n in pairs]),
            "old_weighted": _mean([o[1] for o, _ in pairs]), "new_weighted": _mean([n[1] for _, n in pairs]),
            "lost": sum(1 for o, n in pairs if o[0] > n[0]), "gained": sum(1 for o, n in pairs if n[0] > o[0])}


# --------------------------------------------------------------------------- stored reports
def rematch_report(path: Path) -> dict:
    from pluralign.data.loaders import load_preferences

    rep = json.loads(Path(path).read_text())
    rows = rep.get("outputs") or []
    if not rows or not rep.get("data"):
        return {"file": str(path), "error": "no outputs or no data field: nothing to rematch"}
    recs = {r.id: r for r in load_preferences(rep["data"]).records}
    out: dict = {"file": str(path)}
    for who, key, stored in (("adapter", "adapter", "adapter_match"), ("base", "base", "base_match"),
                             ("ref: other regions", "ref_other_groups_answer", "ref_other_groups")):
        got, mismatch = [], 0
        for row in rows:
            r = recs.get(row.get("id"))
            if r is None or not r.answers or key not in row:
                continue
            o, n = both(row[key], r.answers, r.answer_counts)
            got.append((o, n))
            if stored in row and float(row[stored]) != o[0]:
                mismatch += 1
        if got:
            out[who] = {**_summary(got), "stored_mismatch": mismatch}
    return out


# --------------------------------------------------------------------------- the model-free reference
def reference(data: str, max_records: int | None, test_frac: float, seed: int) -> dict:
    from pluralign.cli.generate import _spread
    from pluralign.data.loaders import load_preferences
    from pluralign.evaluation.generate import other_groups_answer
    from pluralign.training.textrun import load_text_split

    _, sp = load_text_split({"data": data, "by": "question", "test_frac": test_frac, "seed": seed})
    part = sp.test.records
    out = {"data": data, "split": {"by": "question", "test_frac": test_frac, "seed": seed}}
    for name, records in ((f"{max_records} evaluated records", _spread(part, max_records)), ("whole held-out part", part)):
        got = []
        for r in records:
            if not r.answers:
                continue
            a = other_groups_answer(r, part)
            got.append(both(a, r.answers, r.answer_counts) if a else ((0.0, 0.0), (0.0, 0.0)))
        out[name] = _summary(got)
    new = load_preferences(data)
    with old_rule():
        old = load_preferences(data)
    po = {p.record.id: (p.rejected, p.kind) for p in old.pairs}
    pn = {p.record.id: (p.rejected, p.kind) for p in new.pairs}
    changed = sum(1 for k in pn if po.get(k) != pn[k])
    out["dpo_pairs"] = {"n": len(pn), "rejected_changed": changed,
                        "other_region_old": sum(1 for v in po.values() if v[1] == "other-region"),
                        "other_region_new": sum(1 for v in pn.values() if v[1] == "other-region")}
    return out


def _table(res: list[dict]) -> str:
    lines = ["| source | rows | BLEnD match old → new | weighted old → new | lost | gained |", "|---|---|---|---|---|---|"]
    for r in res:
        for k, v in r.items():
            if isinstance(v, dict) and "old" in v:
                src = f"{Path(r['file']).name}: {k}" if "file" in r else k
                lines.append(f"| {src} | {v['n']} | {v['old']:.3f} → {v['new']:.3f} | {v['old_weighted']:.3f} → {v['new_weighted']:.3f} | "
                             f"{v['lost']} | {v['gained']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("reports", nargs="*", type=Path, help="generate-eval report JSON files")
    ap.add_argument("--reference", action="store_true", help="score the model-free reference of the held-out split")
    ap.add_argument("--data", default="blend")
    ap.add_argument("--max-records", type=int, default=300)
    ap.add_argument("--test-frac", type=float, default=0.2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="also write the numbers here")
    a = ap.parse_args(argv)
    if not a.reports and not a.reference:
        ap.error("give report files and/or --reference")
    res = [rematch_report(p) for p in a.reports]
    if a.reference:
        res.append(reference(a.data, a.max_records, a.test_frac, a.seed))
    print(_table(res))
    for r in res:
        if "dpo_pairs" in r:
            d = r["dpo_pairs"]
            print(f"\nDPO pairs: {d['rejected_changed']} of {d['n']} change their rejected answer; other-region pairs "
                  f"{d['other_region_old']} -> {d['other_region_new']} (the rest are hedges)")
        if "error" in r:
            print(f"{r['file']}: {r['error']}", file=sys.stderr)
    if a.json:
        a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
