"""Value transfer: does word-association training move WVS answers toward the data's culture?

The model answers the shipped per-country WVS shares (``load_dataset("wvs-shares")``) for two
countries (default USA and China) with the ``persona`` method (the country as the system prompt),
through :func:`pluralign.evaluation.runner.evaluate`, before and after training. Reported:

* JSD and EMD per country, on all evaluated items and on the **high-tension** subset: the items
  whose human answer distributions differ most between the two countries (Jensen-Shannon distance,
  computed from the data; the ``n_tension`` largest);
* how many high-tension answers **moved toward** each country (distance of that country's persona
  prediction to that country's human distribution fell), and how many moved toward the target
  culture of the training data (``target``, USA for SWOW-EN): the margin
  ``JSD(pred, other) - JSD(pred, target)`` grew; with an exact sign test of toward vs away
  (unchanged answers dropped; :func:`pluralign.wordassoc.stats.sign_test`).
"""

from __future__ import annotations

import hashlib

import numpy as np

from pluralign.data.countries import country_name
from pluralign.data.tasks import SurveyDataset
from pluralign.errors import PluralignError
from pluralign.evaluation import metrics as M
from pluralign.wordassoc.config import TransferConfig
from pluralign.wordassoc.stats import sign_test


def tension_ranking(ds: SurveyDataset, a: str, b: str) -> list[tuple[str, float]]:
    """Items asked in both countries, by decreasing JSD between their human distributions."""
    a, b = country_name(a), country_name(b)
    h = ds.human_distributions()
    out = [(q, M.jsd(h[(a, q)], h[(b, q)])) for q in ds.items if (a, q) in h and (b, q) in h]
    if not out:
        raise PluralignError(f"no item has answers for both {a} and {b}", file=ds.source, field="countries")
    return sorted(out, key=lambda t: (-t[1], t[0]))


def transfer_dataset(cfg: TransferConfig | None = None, ds: SurveyDataset | None = None) -> tuple[SurveyDataset, list[str], dict[str, float]]:
    """The evaluation set (two countries; high-tension items first) and the high-tension ids."""
    from pluralign.data import load_dataset

    cfg = cfg or TransferConfig()
    ds = ds or load_dataset("wvs-shares")
    ds = ds.filter(countries=list(cfg.countries))
    ranking = tension_ranking(ds, *cfg.countries)
    tension = [q for q, _ in ranking[: cfg.n_tension]]
    both = [q for q, _ in ranking]
    if cfg.n_items is not None and cfg.n_items < len(both):
        rest = sorted(both[cfg.n_tension:], key=lambda q: hashlib.sha256(f"{cfg.seed}|{q}".encode()).hexdigest())
        keep = tension + rest[: max(0, cfg.n_items - len(tension))]
    else:
        keep = both
    return ds.filter(questions=keep), tension, dict(ranking)


def _preds(result: dict) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray]]:
    if "predictions" not in result:
        raise PluralignError("the evaluation result has no predictions (keep_predictions=False?)", field="predictions")
    return {(r["group"], r["item_id"]): (np.asarray(r["probs"]), np.asarray(r["human"])) for r in result["predictions"]}


def evaluate_transfer(model, tok, test: SurveyDataset, cfg: TransferConfig | None = None, *, model_name: str = "",
                      progress: bool = True) -> dict:
    from pluralign.evaluation.runner import EvalConfig, evaluate

    cfg = cfg or TransferConfig()
    return evaluate(model, tok, test, EvalConfig(method=cfg.method, batch_size=cfg.batch_size, seed=cfg.seed),
                    model_name=model_name, progress=progress)


def _dist_table(pred: dict, items: dict, qs: list[str], countries: list[str]) -> dict:
    out = {}
    for c in countries:
        keys = [(c, q) for q in qs if (c, q) in pred]
        out[c] = {
            "n": len(keys),
            "jsd": float(np.mean([M.jsd(*pred[k]) for k in keys])) if keys else float("nan"),
            "emd": float(np.mean([M.emd(pred[k][0], pred[k][1], items[k[1]].ordinal) for k in keys])) if keys else float("nan"),
        }
    return out


def compare_transfer(before: dict, after: dict, test: SurveyDataset, tension: list[str], cfg: TransferConfig | None = None) -> dict:
    """Per-country JSD / EMD before and after (all items, high-tension items) and move counts."""
    cfg = cfg or TransferConfig()
    countries = [country_name(c) for c in cfg.countries]
    target = country_name(cfg.target)
    others = [c for c in countries if c != target]
    if target not in countries or len(others) != 1:
        raise PluralignError(f"target {target} must be one of the two countries {countries}", field="target")
    other = others[0]
    pb, pa = _preds(before), _preds(after)
    qs_all = list(test.items)
    h = test.human_distributions()
    table = {"all": {}, "high_tension": {}}
    for name, qs in (("all", qs_all), ("high_tension", tension)):
        tb, ta = _dist_table(pb, test.items, qs, countries), _dist_table(pa, test.items, qs, countries)
        for c in countries:
            table[name][c] = {"before": tb[c], "after": ta[c],
                              "delta_jsd": ta[c]["jsd"] - tb[c]["jsd"], "delta_emd": ta[c]["emd"] - tb[c]["emd"]}
    moves: dict = {}
    for c in countries:
        toward_own = toward_target = away_own = away_target = n = 0
        for q in tension:
            k = (c, q)
            if k not in pb or k not in pa:
                continue
            n += 1
            ja, jb = M.jsd(pa[k][0], h[k]), M.jsd(pb[k][0], h[k])
            toward_own += ja < jb
            away_own += ja > jb
            mb = M.jsd(pb[k][0], h[(other, q)]) - M.jsd(pb[k][0], h[(target, q)])
            ma = M.jsd(pa[k][0], h[(other, q)]) - M.jsd(pa[k][0], h[(target, q)])
            toward_target += ma > mb
            away_target += ma < mb
        moves[c] = {"n": n, "toward_own_country": int(toward_own), f"toward_target_{target}": int(toward_target),
                    "sign_test_own": sign_test(toward_own, away_own),
                    f"sign_test_target_{target}": sign_test(toward_target, away_target)}
    return {"countries": countries, "target": target, "n_items": len(qs_all), "n_tension": len(tension),
            "tension_items": tension, "table": table, "moves_high_tension": moves}


def transfer_rows(cmp: dict, label: str) -> list[list]:
    """Markdown-ready rows: label, country, subset, JSD before→after, EMD before→after, moves."""
    rows = []
    for subset in ("all", "high_tension"):
        for c in cmp["countries"]:
            t = cmp["table"][subset][c]
            mv = cmp["moves_high_tension"][c]
            tgt = cmp["target"]
            n_tgt = mv["toward_target_" + tgt]
            moved = ""
            if subset == "high_tension":
                moved = f"{mv['toward_own_country']}/{mv['n']} own, {n_tgt}/{mv['n']} →{tgt}"
                st = mv.get("sign_test_target_" + tgt)
                if st:
                    moved += f" (sign test →{tgt}: {st['toward']} vs {st['away']} away, p = {st['p_two_sided']:.3g})"
            rows.append([label, c, f"{subset} ({t['before']['n']})", f"{t['before']['jsd']:.3f} → {t['after']['jsd']:.3f}",
                         f"{t['before']['emd']:.3f} → {t['after']['emd']:.3f}", moved])
    return rows


__all__ = ["TransferConfig", "tension_ranking", "transfer_dataset", "evaluate_transfer", "compare_transfer", "transfer_rows"]
