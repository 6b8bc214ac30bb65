"""GlobalOpinionQA loader: CSV with defaultdict selections and list-literal options."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from pluralign.data import load_dataset, split_dataset
from pluralign.data.loaders.globalopinionqa import load_globalopinionqa, parse_selections
from pluralign.errors import PluralignError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data" / "globalopinionqa" / "global_opinions.csv"


def _write(path: Path, rows: list[list[str]], header=("question", "selections", "options", "source")) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


GOOD = ["Q?", "defaultdict(<class 'list'>, {'Germany': [0.5, 0.5]})", "['Yes', 'No']", "GAS"]


def test_fixture_distributions():
    ds = load_dataset(FIX)  # detected from the header
    assert ds.kind == "distributional" and ds.name == "globalopinionqa"
    assert len(ds.items) == 3 and len(ds) == 8
    assert ds.groups() == ["Brazil", "Germany", "Great Britain", "Japan", "Nigeria", "South Korea"]
    by = {(e.group, ds.items[e.item_id].text[:20]): np.array(e.probs) for e in ds.examples}
    for p in by.values():
        assert p.sum() == pytest.approx(1.0)
    # shares given in percent are renormalised; nan counts as 0
    np.testing.assert_allclose(by[("Germany", "How important is rel")], [0.1, 0.2, 0.3, 0.4])
    np.testing.assert_allclose(by[("Great Britain", "Is it acceptable for")], [0.25, 0.0, 0.75])
    censor = next(i for i in ds.items.values() if i.text.startswith("Is it acceptable"))
    assert censor.options == ("Acceptable", "Not acceptable", "Don't know")
    assert censor.category == "GAS" and not censor.ordinal
    assert all(i.id.startswith("goqa-") for i in ds.items.values())


def test_ids_are_stable_when_rows_move(tmp_path):
    rows = list(csv.reader(open(FIX)))
    moved = _write(tmp_path / "moved.csv", rows[:0:-1], header=rows[0])  # data rows reversed
    a, b = load_globalopinionqa(FIX), load_globalopinionqa(moved)
    assert {i.id: i.text for i in a.items.values()} == {i.id: i.text for i in b.items.values()}
    for seed in range(10):  # every seed that gives two non-empty parts moves no question
        try:
            sa = split_dataset(a, "question", test_frac=0.5, seed=seed)
        except PluralignError:
            continue
        sb = split_dataset(b, "question", test_frac=0.5, seed=seed)
        assert set(sa.test.items) == set(sb.test.items) and set(sa.train.items) == set(sb.train.items)


def test_repeated_questions_get_distinct_ids(tmp_path):
    ds = load_globalopinionqa(_write(tmp_path / "g.csv", [GOOD, GOOD]))
    assert len(ds.items) == 2 and sorted(ds.items)[1].endswith("-2")


def test_options_source_filter_and_flags(tmp_path):
    ds = load_globalopinionqa(FIX, sources=["WVS"], ordinal=True)
    assert len(ds.items) == 1 and all(i.ordinal for i in ds.items.values())
    with pytest.raises(PluralignError, match="for source"):
        load_globalopinionqa(FIX, sources=["ESS"])


def test_plain_dict_selections_are_accepted():
    assert parse_selections("{'A': [1, 2]}", file=Path("x"), row=1) == {"A": [1.0, 2.0]}


@pytest.mark.parametrize(
    "selections, options, field, message",
    [
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 0.5]", "['Yes', 'No']", "selections", "must look like defaultdict"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 0.5})", "['Yes', 'No']", "selections", "cannot parse selections"),
        ("[0.5, 0.5]", "['Yes', 'No']", "selections", "must look like defaultdict"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, __import__('os')]})", "['Yes', 'No']", "selections", "cannot parse"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 'x']})", "['Yes', 'No']", "selections", "is not a number"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, -0.1]})", "['Yes', 'No']", "selections", "not a proportion"),
        ("defaultdict(<class 'list'>, {'Germany': [0.2, 0.3, 0.5]})", "['Yes', 'No']", "selections", "3 shares for 2 options"),
        ("defaultdict(<class 'list'>, {})", "['Yes', 'No']", "selections", "empty group list"),
        ("defaultdict(<class 'list'>, {'Germany': [0, 0]})", "['Yes', 'No']", "selections", "no answers"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 0.5]})", "Yes, No", "options", "Python list literal"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 0.5]})", "['Yes']", "options", "at least two options"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 0.5]})", "{'a': 1}", "options", "list of labels"),
        ("defaultdict(<class 'list'>, {'Germany': [0.5, 0.5]})", "['Yes', 'Yes']", "options", "repeated option"),
    ],
)
def test_malformed_rows(tmp_path, selections, options, field, message):
    path = _write(tmp_path / "g.csv", [GOOD, ["Q2?", selections, options, "GAS"]])
    with pytest.raises(PluralignError) as ei:
        load_globalopinionqa(path, strict=True)  # unusable cells are skipped and counted unless strict
    msg = str(ei.value)
    assert msg.startswith(f"{path}, row 2, field '{field}': ") and message in msg and "\n" not in msg


def test_skip_invalid_rows_are_counted(tmp_path):
    bad = ["Q2?", "defaultdict(<class 'list'>, {'Germany': [0.2, 0.3, 0.5]})", "['Yes', 'No']", "GAS"]
    ds = load_globalopinionqa(_write(tmp_path / "g.csv", [GOOD, bad]), skip_invalid=True)
    assert len(ds) == 1 and ds.meta["skipped"] == [{"row": 2, "reason": "Germany has 3 shares for 2 options"}]
    assert ds.meta["dropped"] == {"cells whose shares do not match the options": 1, "questions without a usable country": 1}


def test_unusable_cells_are_skipped_and_counted_by_default(tmp_path):
    """Issue 9 item 11: one country with all-zero shares no longer refuses the whole file, nor
    does the question it leaves without countries."""
    rows = [GOOD,
            ["Q2?", "defaultdict(<class 'list'>, {'Armenia': [0, 0], 'Japan': [0.4, 0.6]})", "['Yes', 'No']", "GAS"],
            ["Q3?", "defaultdict(<class 'list'>, {'Armenia': [0.0, 0.0]})", "['Yes', 'No']", "GAS"],
            ["Q4?", "defaultdict(<class 'list'>, {'Japan': [1.0]})", "['Yes']", "GAS"]]
    ds = load_globalopinionqa(_write(tmp_path / "g.csv", rows))
    assert len(ds.items) == 2 and "Armenia" not in ds.groups()
    assert ds.meta["dropped"] == {"cells with all shares 0": 2, "questions without a usable country": 1,
                                  "questions with fewer than two options": 1}
    with pytest.raises(PluralignError, match="Armenia has no answers"):
        load_globalopinionqa(_write(tmp_path / "g.csv", rows), strict=True)


def test_missing_column_and_missing_file(tmp_path):
    path = _write(tmp_path / "g.csv", [GOOD[:2] + GOOD[3:]], header=("question", "selections", "source"))
    with pytest.raises(PluralignError) as ei:
        load_globalopinionqa(path)
    assert str(ei.value).startswith(f"{path}, field 'options': missing column(s) options")
    with pytest.raises(PluralignError, match="file not found"):
        load_globalopinionqa(tmp_path / "nope.csv")
    with pytest.raises(PluralignError, match="not shipped"):
        load_dataset("globalopinionqa")


def test_strict_reaches_the_loader_through_load_dataset_and_the_cli(tmp_path):
    """``--strict`` on eval and train: fail on the first unusable cell; loaders without a skip
    policy ignore it."""
    from reliability._helpers import assert_one_error, invoke

    rows = [GOOD, ["Q2?", "defaultdict(<class 'list'>, {'Armenia': [0, 0], 'Japan': [0.4, 0.6]})", "['Yes', 'No']", "GAS"]]
    path = _write(tmp_path / "g.csv", rows)
    assert load_dataset(f"globalopinionqa:{path}").meta["dropped"] == {"cells with all shares 0": 1}
    with pytest.raises(PluralignError, match="Armenia has no answers"):
        load_dataset(f"globalopinionqa:{path}", strict=True)
    assert len(load_dataset("wvs-shares", strict=True).items) > 0  # takes no strict: passed over
    for cmd in (["eval", "--out", tmp_path / "ev"], ["train", "--task", "distributional", "--out", tmp_path / "tr"]):
        res = invoke([*cmd, "--model", tmp_path / "no-model-needed", "--data", f"globalopinionqa:{path}", "--strict"])
        assert_one_error(res, contains="Armenia has no answers")
