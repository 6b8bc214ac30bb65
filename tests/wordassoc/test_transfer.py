"""Value transfer bookkeeping: high-tension items from the data, before/after tables, move counts."""

from __future__ import annotations

import numpy as np
import pytest

from pluralign.evaluation import metrics as M
from pluralign.wordassoc.transfer import TransferConfig, compare_transfer, tension_ranking, transfer_dataset, transfer_rows


def _result(test, pred_fn) -> dict:
    rows = []
    for e in test.examples:
        rows.append({"group": e.group, "item_id": e.item_id, "probs": list(pred_fn(e)), "human": list(e.probs)})
    return {"predictions": rows}


def test_tension_items_and_moves():
    cfg = TransferConfig(n_tension=5, n_items=12, seed=0)
    test, tension, ranking = transfer_dataset(cfg)
    assert len(test.items) == 12 and set(tension) <= set(test.items) and len(tension) == 5
    h = test.human_distributions()
    # the high-tension items are those with the largest US-China JSD, computed from the data
    jsds = {q: M.jsd(h[("United States", q)], h[("China", q)]) for q in test.items}
    assert min(jsds[q] for q in tension) >= max(jsds[q] for q in test.items if q not in tension) - 1e-12
    assert tension_ranking(test, "USA", "CHN")[0][0] == tension[0]
    assert ranking[tension[0]] == pytest.approx(jsds[tension[0]])
    assert transfer_dataset(cfg)[1] == tension  # deterministic

    uniform = lambda e: np.full(len(e.probs), 1 / len(e.probs))  # noqa: E731
    usa = {q: h[("United States", q)] for q in test.items}
    before = _result(test, uniform)
    after = _result(test, lambda e: usa[e.item_id])  # every persona now answers like the US
    cmp = compare_transfer(before, after, test, tension, cfg)
    us, cn = cmp["moves_high_tension"]["United States"], cmp["moves_high_tension"]["China"]
    assert us["n"] == 5 and us["toward_own_country"] == 5 and us["toward_target_United States"] == 5
    assert cn["toward_target_United States"] == 5
    # all 5 moved toward the US, none away: exact two-sided sign test p = 2 / 2**5
    st = us["sign_test_target_United States"]
    assert (st["toward"], st["away"]) == (5, 0) and st["p_two_sided"] == pytest.approx(2 / 32)
    own = cmp["moves_high_tension"]["China"]["sign_test_own"]
    assert own["n"] == 5 and own["toward"] == cn["toward_own_country"]  # every answer changed: no tie dropped
    same = compare_transfer(before, before, test, tension, cfg)  # no change: every answer is a tie, dropped
    assert same["moves_high_tension"]["China"]["sign_test_target_United States"] == {
        "toward": 0, "away": 0, "n": 0, "p_two_sided": 1.0, "p_greater": 1.0}
    t = cmp["table"]["high_tension"]
    assert t["United States"]["after"]["jsd"] == pytest.approx(0.0, abs=1e-6)
    assert t["China"]["delta_jsd"] > 0  # answering like the US moves China's persona away from China
    assert cmp["table"]["all"]["United States"]["before"]["n"] == 12
    rows = transfer_rows(cmp, "a → b")
    assert len(rows) == 4 and "5/5 own" in rows[2][-1]


def test_study_report_pools_the_transfer_over_seeds(tmp_path):
    """The study's report carries the transfer: per seed (the `wordassoc report` table) and over seeds
    (JSD mean [range], each seed's sign test toward the target culture, the seeds' counts added up)."""
    from pluralign.wordassoc.report import transfer_table
    from pluralign.wordassoc.study import StudyConfig, pooled_markdown

    cfg = TransferConfig(n_tension=5, n_items=12, seed=0)
    test, tension, _ = transfer_dataset(cfg)
    h = test.human_distributions()

    def res(pred_fn) -> dict:
        gen = {"P@5": 0.1, "per_cue": {"P@5": {"a": 0.1}}, "distinct_words": {"n_cues": 1, "mean": 3.0, "median": 3.0}}
        return {"schema": "pluralign.wordassoc.eval/1", "n_eval_cues": 1, "generation": gen, "ranking": {},
                "transfer": {"config": {"countries": list(cfg.countries), "target": cfg.target, "n_tension": 5,
                                        "n_items": 12, "seed": 0}, "result": _result(test, pred_fn)}}

    uniform = res(lambda e: np.full(len(e.probs), 1 / len(e.probs)))
    like_us = res(lambda e: h[("United States", e.item_id)])
    like_cn = res(lambda e: h[("China", e.item_id)])
    results = {"vanilla": uniform, 0: {"SFT": like_us}, 1: {"SFT": like_cn}}
    text = pooled_markdown(StudyConfig(out=str(tmp_path), seeds=(0, 1)), results)
    assert "## Value transfer" in text
    row = next(ln for ln in text.splitlines() if ln.startswith("| vanilla → SFT | United States | 2 |"))
    moves = [compare_transfer(uniform["transfer"]["result"], r["transfer"]["result"], test, tension, cfg)
             ["moves_high_tension"]["United States"]["sign_test_target_United States"] for r in (like_us, like_cn)]
    assert moves[0]["toward"] == 5 and moves[1]["toward"] < moves[1]["away"]  # the seeds disagree
    assert "s0: 5 vs 0" in row and f"s1: {moves[1]['toward']} vs {moves[1]['away']}" in row
    total = (moves[0]["toward"] + moves[1]["toward"], moves[0]["away"] + moves[1]["away"])
    assert row.rstrip(" |").split("| ")[-1].startswith(f"{total[0]} vs {total[1]}")
    # JSD of the US persona over the high-tension items: vanilla → mean of the two seeds [their range]
    after = [compare_transfer(uniform["transfer"]["result"], r["transfer"]["result"], test, tension, cfg)
             ["table"]["high_tension"]["United States"]["after"]["jsd"] for r in (like_us, like_cn)]
    assert f"→ {np.mean(after):.3f} [{min(after):.3f}, {max(after):.3f}]" in row
    # the control: vanilla -> the uniform answer, which no model needs (flattening alone)
    ctrl = next(ln for ln in text.splitlines() if ln.startswith("| vanilla → uniform (no model) | United States | – |"))
    flat = compare_transfer(uniform["transfer"]["result"], uniform["transfer"]["result"], test, tension, cfg)
    assert "0 vs 0 (p = 1)" in ctrl and flat["moves_high_tension"]["United States"]["n"] == 5  # uniform -> uniform: all ties
    # label mass: vanilla -> mean over seeds, from each answer's mass on the option labels
    for r, m in ((uniform, 0.5), (like_us, 0.2), (like_cn, 0.1)):
        for p in r["transfer"]["result"]["predictions"]:
            p["mass"] = m
    text = pooled_markdown(StudyConfig(out=str(tmp_path), seeds=(0, 1)), results)
    row = next(ln for ln in text.splitlines() if ln.startswith("| vanilla → SFT | China | 2 |"))
    assert "| 0.500 → 0.150 [0.100, 0.200] |" in row
    # each seed's section has the `wordassoc report` transfer table
    assert text.count("high-tension answers moved") == 2
    assert transfer_table([uniform, like_us], ["vanilla", "SFT"]) in text
    assert transfer_table([uniform], ["vanilla"]) == ""
