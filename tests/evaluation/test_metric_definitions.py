"""Metric definitions comparable with the papers (issue 8, "Correct by default").

* ``macro_f1`` is sklearn's macro-F1 over (question, option) classes with all test rows pooled,
  ``macro_f1_option_label`` the one over option labels pooled across questions (issue 29);
* ``emd_wvb`` is WorldValuesBench's individual-data EMD; checked against a faithful port of
  WorldValuesBench's own ``evaluation/evaluate.py``;
* entropies are also reported in nats;
* tied modes give fractional credit, never silently the lowest option.
"""

from __future__ import annotations

from collections import Counter  # noqa: F401  (imported by the ported reference module)
from typing import List, Union

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy as scipy_entropy
from scipy.stats import wasserstein_distance
from sklearn.metrics import f1_score

from pluralign.data import GroupExample, IndividualExample, Profile, SurveyDataset, SurveyItem
from pluralign.evaluation import metrics as M
from pluralign.evaluation.runner import compute_metrics

Q1 = SurveyItem("q1", "How important is family in your life?", ("Very important", "Rather important", "Not very important"))
Q2 = SurveyItem("q2", "Which do you prefer?", ("agree", "disagree"), ordinal=False)
ITEMS = {"q1": Q1, "q2": Q2}
US, DE = Profile(country="United States"), Profile(country="Germany")


@pytest.fixture()
def indiv_test():
    rows = [("r1", US, "q1", 0), ("r2", US, "q1", 1), ("r1", US, "q2", 1), ("r2", US, "q2", 1), ("r3", DE, "q1", 2), ("r3", DE, "q2", 0)]
    return SurveyDataset("probe", "individual", dict(ITEMS), [IndividualExample(r, p, q, a) for r, p, q, a in rows], source="hand")


INDIV_PRED = [np.array(x) for x in ([0.7, 0.2, 0.1], [0.1, 0.6, 0.3], [0.8, 0.2], [0.3, 0.7], [0.2, 0.5, 0.3], [0.9, 0.1])]


def _group_ds(rows):
    return SurveyDataset("t", "distributional", dict(ITEMS), [GroupExample(p.country, p, q, tuple(h)) for p, q, h in rows], source="hand")


# ------------------------------------------------------------------------------------- macro-F1
def test_macro_f1_over_question_option_classes_and_option_labels(indiv_test):
    m, _ = compute_metrics(indiv_test, INDIV_PRED)
    gold = [e.answer for e in indiv_test.examples]
    pred = [int(np.argmax(p)) for p in INDIV_PRED]  # no ties here
    assert pred == [0, 1, 0, 1, 1, 0]
    # labels 0 (P 2/3, R 1 -> .8), 1 (P 2/3, R 2/3), 2 (0) -> (0.8 + 2/3 + 0) / 3
    assert m["macro_f1_option_label"] == pytest.approx(f1_score(gold, pred, average="macro"))
    assert m["macro_f1_option_label"] == pytest.approx((0.8 + 2 / 3) / 3)
    assert m["macro_f1_per_question"] == pytest.approx(11 / 18)
    assert m["macro_f1"] == pytest.approx(0.6)  # (question, option) classes


# ------------------------------------------------------------------------------------- entropy
def test_entropy_in_nats(indiv_test):
    m, _ = compute_metrics(indiv_test, INDIV_PRED)
    assert m["entropy_nats"] == pytest.approx(np.mean([scipy_entropy(p) for p in INDIV_PRED]))
    assert m["entropy"] == pytest.approx(np.mean([scipy_entropy(p) / np.log(len(p)) for p in INDIV_PRED]))
    g = _group_ds([(US, "q1", (0.6, 0.4, 0.0)), (DE, "q2", (0.2, 0.8))])
    pred = [np.array([0.2, 0.3, 0.5]), np.array([0.5, 0.5])]
    mg, _ = compute_metrics(g, pred)
    assert mg["entropy_nats"] == pytest.approx((scipy_entropy(pred[0]) + np.log(2)) / 2)
    assert mg["human_entropy_nats"] == pytest.approx((scipy_entropy([0.6, 0.4]) + scipy_entropy([0.2, 0.8])) / 2)
    assert mg["human_entropy"] == pytest.approx((scipy_entropy([0.6, 0.4]) / np.log(3) + scipy_entropy([0.2, 0.8]) / np.log(2)) / 2)


# ------------------------------------------------------------------------------------- ties
def test_group_accuracy_with_tied_modes():
    g = _group_ds([
        (US, "q1", (0.5, 0.0, 0.5)),  # human modes {0, 2}
        (DE, "q1", (0.5, 0.0, 0.5)),
        (US, "q2", (0.0, 1.0)),
        (DE, "q2", (0.5, 0.5)),
    ])
    pred = [
        np.array([0.1, 0.2, 0.7]),  # one mode 2, among the human modes: a hit (argmax of human said 0: a miss)
        np.array([0.4, 0.4, 0.2]),  # tied {0, 1}: one of two is a human mode -> 1/2
        np.array([0.5, 0.5]),  # tied {0, 1} vs {1} -> 1/2 (argmax said 0: a miss)
        np.array([0.3, 0.7]),  # 1 in {0, 1} -> hit
    ]
    m, per = compute_metrics(g, pred)
    assert m["accuracy"] == pytest.approx((1 + 0.5 + 0.5 + 1) / 4)
    assert per["United States"]["accuracy"] == pytest.approx(0.75)
    assert per["Germany"]["accuracy"] == pytest.approx(0.75)


def test_uniform_reference_gets_chance_accuracy_not_option_zero():
    rows = [("r1", US, "q1", 0), ("r2", US, "q1", 0), ("r3", US, "q1", 2), ("r4", US, "q2", 0)]
    ds = SurveyDataset("p", "individual", dict(ITEMS), [IndividualExample(r, p, q, a) for r, p, q, a in rows], source="hand")
    uni = [np.full(ds.items[e.item_id].n_options, 1.0 / ds.items[e.item_id].n_options) for e in ds.examples]
    m, _ = compute_metrics(ds, uni)
    # np.argmax would pick option 0 and score 3/4; tie splitting gives the chance rate
    assert m["accuracy"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    # macro-F1 with tied rows split 1/K over the options (sample weights)
    want = f1_score([0, 0, 0, 0, 0, 0, 2, 2, 2, 0, 0], [0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1], average="macro",
                    sample_weight=[1 / 3] * 9 + [1 / 2] * 2, zero_division=0)
    assert m["macro_f1_option_label"] == pytest.approx(want)


def test_near_ties_within_tolerance():
    assert list(M.modes(np.array([0.5, 0.5 - 1e-12]))) == [0, 1]
    assert list(M.modes(np.array([0.5, 0.5 - 1e-6]))) == [0]
    assert M.mode_credit(np.array([0.25, 0.25, 0.25, 0.25]), 3) == pytest.approx(0.25)
    assert M.mode_credit(np.array([0.2, 0.8]), np.array([0.5, 0.5])) == 1.0


# ------------------------------------------------------------------------------------- emd_wvb
def test_emd_wvb_by_hand(indiv_test):
    m, _ = compute_metrics(indiv_test, INDIV_PRED)
    # q1: true answers {0, 1, 2}/2, predicted {0, 1, 1}/2 -> W1 = |2-1|/2/3 = 1/6
    # q2: true {1, 1, 0}, predicted {0, 1, 0} -> one unit of 1/3 moved: 1/3
    assert m["emd_wvb"] == pytest.approx((1 / 6 + 1 / 3) / 2)


# ---------------------------------------------------------------------------------------------
# Port of WorldValuesBench's evaluation code, kept faithful to the source (only the file loading
# at import time is replaced by the module globals below).
# Source: github.com/Demon702/WorldValuesBench, evaluation/evaluate.py (commit 351947c):
#   get_normalized_scores, get_gt_answers, earth_movers_distance, evaluate.
question_metadata: dict = {}
full_qa_df: pd.DataFrame = pd.DataFrame()


def get_gt_answers(question: str, df: pd.DataFrame, normalize: bool = False) -> List[Union[int, float]]:
    # Extract sample interview_ids
    participant_ids = df[df['QUESTION_ID'] == question]['PARTICIPANT_ID'].tolist()

    # Extract ground truth answers
    gt_answers = full_qa_df.loc[participant_ids][question].astype(int).tolist()
    if normalize:
        gt_answers = get_normalized_scores(gt_answers, question)
    return gt_answers


def get_normalized_scores(scores: List[int], question: str, min_: Union[int, float] = 0.0, max_: Union[int, float] = 1.0) -> List[float]:
    q_info = question_metadata[question]
    min_range, max_range = q_info['answer_scale_min'], q_info['answer_scale_max']
    scores = np.array(scores)
    normalized_scores = min_ + ((scores - min_range) * max_ / (max_range - min_range))
    return normalized_scores.tolist()


def earth_movers_distance(arr1: List[int], arr2: List[int]) -> float:
    return wasserstein_distance(arr1, arr2)


def wvb_evaluate(input_file: pd.DataFrame, output_file: str = None, sep: str = ',') -> dict:
    df = input_file

    # Get the unique question ids
    questions = df['QUESTION_ID'].unique()

    output_json = {}

    for question in questions:
        gt_answers = get_gt_answers(question, df, normalize=True)

        model_scores = df[df['QUESTION_ID'] == question]['SCORE'].dropna().astype(int).tolist()
        model_scores = get_normalized_scores(model_scores, question)

        output_json[question] = earth_movers_distance(gt_answers, model_scores)

    return output_json
# ------------------------------------------------------------------------------ end of the port


def test_emd_wvb_equals_worldvaluesbench_reference(monkeypatch):
    """Same predictions through WorldValuesBench's evaluate() and through compute_metrics."""
    rng = np.random.default_rng(8)
    # WVB questions are coded on raw scales answer_scale_min..answer_scale_max; ours are 0..K-1
    scales = {"Q1": (1, 4), "Q2": (1, 10), "Q3": (1, 5), "Q4": (0, 2), "Q5": (1, 2)}
    items = {q: SurveyItem(q, f"question {q}", tuple(f"opt{i}" for i in range(hi - lo + 1))) for q, (lo, hi) in scales.items()}
    countries = [Profile(country=c) for c in ("United States", "Germany", "Thailand", "Nigeria")]
    participants = [(f"{1000 + i}", countries[i % 4]) for i in range(40)]
    exs, probs, table, rows = [], [], {}, []
    for pid, prof in participants:
        table[int(pid)] = {}
        for q, (lo, hi) in scales.items():
            if rng.random() < 0.2:  # not every participant answers every question
                continue
            k = hi - lo + 1
            ans = int(rng.integers(0, k))
            p = rng.dirichlet(np.ones(k) * 0.7)
            exs.append(IndividualExample(pid, prof, q, ans))
            probs.append(p)
            table[int(pid)][q] = ans + lo
            rows.append({"QUESTION_ID": q, "PARTICIPANT_ID": int(pid), "SCORE": int(np.argmax(p)) + lo})
    ds = SurveyDataset("wvb", "individual", items, exs, source="synthetic")
    m, _ = compute_metrics(ds, probs)

    monkeypatch.setitem(globals(), "question_metadata",
                        {q: {"answer_scale_min": lo, "answer_scale_max": hi} for q, (lo, hi) in scales.items()})
    monkeypatch.setitem(globals(), "full_qa_df", pd.DataFrame.from_dict(table, orient="index"))
    ref = wvb_evaluate(pd.DataFrame(rows))
    assert set(ref) == set(scales)
    assert m["emd_wvb"] == pytest.approx(float(np.mean(list(ref.values()))), abs=1e-12)
    # and the same predictions' option-label macro-F1 / accuracy are sklearn's on the argmax labels
    gold = [e.answer for e in exs]
    pred = [int(np.argmax(p)) for p in probs]
    assert m["macro_f1_option_label"] == pytest.approx(f1_score(gold, pred, average="macro"), abs=1e-12)
    assert m["accuracy"] == pytest.approx(np.mean(np.array(gold) == np.array(pred)), abs=1e-12)
