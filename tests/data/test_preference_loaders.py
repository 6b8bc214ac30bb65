"""Preference / prompt loaders on fixtures written in the published formats: PRISM (survey.jsonl +
conversations.jsonl), Community Alignment (community_alignment.csv), BLEnD (annotations/*.json);
BLEnD's answer matching; splits by unit; bad input dropped-and-counted or one clear error."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pluralign.data import available_loaders, load_dataset
from pluralign.data.loaders import is_preference_spec, load_preferences
from pluralign.data.loaders.blend import blend_match, normalise_response
from pluralign.data.preferences import PreferencePair, PromptRecord, check_pairs
from pluralign.data.profile import Profile
from pluralign.errors import PluralignError

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "data"


# ------------------------------------------------------------------ PRISM
def test_prism_pairs_from_scores_with_profiles_and_history():
    ds = load_preferences(FIX / "prism")
    assert ds.name == "prism" and ds.profile_role == "user"
    by_rec = {}
    for p in ds.pairs:
        by_rec.setdefault(p.record.id, []).append((p.chosen, p.rejected))
    # opening turn of c0: scores 80, 60, 60, 30 -> 5 pairs (the 60/60 tie makes none)
    assert len(by_rec["c0:0"]) == 5
    assert ("A shepherd's pie is warming and easy.", "I cannot help with that.") in by_rec["c0:0"]
    assert ("Try a stir-fry with vegetables.", "Cook pasta with tomato sauce.") not in by_rec["c0:0"]
    # the second turn continues with the chosen response
    rec1 = next(p.record for p in ds.pairs if p.record.id == "c0:1")
    assert [r for r, _ in rec1.messages] == ["user", "assistant", "user"]
    assert rec1.messages[1][1] == "A shepherd's pie is warming and easy." and rec1.prompt == "Something quicker please."
    prof = rec1.profile
    assert (prof.country, prof.sex, prof.age_band, prof.religion) == ("United Kingdom", "female", "25-34 years", "no religion")
    assert dict(prof.extra)["ethnicity"] == "White" and rec1.respondent == "user0" and rec1.unit == "c0"
    # c1: identical texts scored 90 / 50 -> dropped; c2: rater without survey row; c3: rater without demographics
    d = ds.meta["dropped"]
    assert d["identical chosen and rejected response"] == 1
    assert d["conversation of a rater without a survey profile"] == 2
    assert d["survey row without any demographic"] == 1
    assert d["responses scored within min_gap=1 (no preference)"] == 1
    assert len(ds.pairs) == 8 and ds.summary()["dropped"] == d


def test_prism_strict_and_malformed_lines_are_one_error_line(tmp_path):
    with pytest.raises(PluralignError) as e:
        load_preferences(FIX / "prism", strict=True)
    msg = str(e.value)
    assert "survey.jsonl" in msg and "row 3" in msg and "'user_id'" in msg and "\n" not in msg
    d = tmp_path / "prism"
    shutil.copytree(FIX / "prism", d)
    with open(d / "conversations.jsonl", "a") as f:
        f.write("{not json\n")
    with pytest.raises(PluralignError, match="row 5") as e:
        load_preferences(f"prism:{d}")
    assert "conversations.jsonl" in str(e.value)
    with pytest.raises(PluralignError, match="not shipped"):
        load_preferences("prism")


# ------------------------------------------------------------------ Community Alignment
def test_community_alignment_pairs_profiles_and_drops():
    ds = load_preferences(FIX / "community_alignment" / "community_alignment.csv")
    assert ds.name == "community-alignment" and ds.profile_role == "user"
    first = [p for p in ds.pairs if p.record.id == "101:0"]
    assert len(first) == 3 and {p.chosen for p in first} == {"Take them to a temple and share sweets."}
    assert "Throw a surprise party." in {p.rejected for p in first}  # <|end_of_text|> removed
    prof = first[0].record.profile
    assert (prof.country, prof.sex, prof.age_band) == ("India", "female", "18-34 years")
    assert dict(prof.extra) == {"ethnicity": "Asian", "political": "Moderate"}
    second = next(p for p in ds.pairs if p.record.id == "101:1")
    assert second.record.messages[1] == ("assistant", "Take them to a temple and share sweets.")
    assert {(p.chosen, p.rejected) for p in ds.pairs if p.record.id == "102:0"} == {("Throw a surprise party.", "Go bowling.")}
    d = ds.meta["dropped"]
    assert d == {"identical chosen and rejected response": 1, "row without annotator demographics": 1,
                 "turn without a usable preferred response": 1}
    assert load_preferences(FIX / "community_alignment").summary()["pairs"] == len(ds.pairs)  # the folder works too
    with pytest.raises(PluralignError) as e:
        load_preferences(f"community-alignment:{FIX / 'community_alignment'}", strict=True)
    assert "row 2" in str(e.value) and "first_turn_response_b" in str(e.value)


# ------------------------------------------------------------------ BLEnD
def test_blend_records_pairs_and_question_split():
    ds = load_preferences(FIX / "blend")
    assert ds.profile_role == "self" and sorted(ds.meta["regions"]) == ["China", "Mexico", "UK"]
    assert len(ds.records) == 10  # 12 questions, UK Q-04 and China Q-04 fail BLEnD's scoring filter
    assert ds.meta["dropped"] == {"question BLEnD leaves unscored (no answer, >= 3 no-answer/not-applicable or >= 5 idk)": 2}
    pairs = {p.record.id: p for p in ds.pairs}
    assert pairs["UK:Q-01"].chosen == "porridge" and pairs["UK:Q-01"].kind == "other-region"
    assert pairs["UK:Q-01"].rejected in ("chilaquiles", "congee")
    assert pairs["UK:Q-03"].rejected == "coffee"  # China's tea matches the UK's: not an "other-region" answer
    assert pairs["Mexico:Q-04"].kind == "hedge"  # nobody else answered Q-04 usably
    rec = pairs["China:Q-02"].record
    assert rec.profile == Profile(country="China") and rec.answers[0] == ("table tennis", "ping-pong", "乒乓球")
    assert "What sport is most popular in China?" in rec.prompt
    sp = ds.split("question", test_frac=0.5, seed=1)
    train_q, test_q = {r.unit for r in sp.train.records}, {r.unit for r in sp.test.records}
    assert train_q and test_q and not train_q & test_q  # a question is held out for every region at once
    assert sp.describe()["train"] + sp.describe()["test"] == len(ds.records)
    neutral = load_preferences(f"blend:{FIX / 'blend'}", neutral=True)
    assert "your country" in neutral.records[0].prompt and "China" not in neutral.records[0].prompt
    only = load_preferences(FIX / "blend", regions="UK")
    assert {p.kind for p in only.pairs} == {"hedge"}
    with pytest.raises(PluralignError, match="unknown BLEnD region"):
        load_preferences(FIX / "blend", regions="Atlantis")


def test_blend_matching_follows_blend_soft_exact_match():
    ans = (("table tennis", "ping-pong"), ("steamed buns",), ("football",))
    counts = (3, 2, 1)
    assert blend_match("Table tennis.", ans, counts) == (1.0, 1.0)
    assert blend_match("I would say ping pong", ans, counts) == (1.0, 1.0)  # '-' <-> ' '
    assert blend_match("A steamed bun, of course", ans, counts) == (1.0, pytest.approx(2 / 3))  # every token, plural folded
    assert blend_match("Answer: football", ans, counts, prompt="Question: ...\nAnswer:") == (1.0, pytest.approx(1 / 3))
    assert blend_match("tennis", ans, counts) == (0.0, 0.0)  # not every token of any answer
    assert blend_match("", ans, counts) == (0.0, 0.0)
    assert normalise_response("Answer: Tea。", "Answer:") == "tea"


def test_blend_shared_data_when_present():
    from conftest import shared

    root = shared("blend_cultural_knowledge")
    ds = load_preferences(f"blend:{root}")
    assert len(ds.meta["regions"]) >= 12 and len({r.unit for r in ds.records}) >= 450
    assert all(r.answers for r in ds.records) and len(ds.pairs) == len(ds.records)


# ------------------------------------------------------------------ registry and checks
def test_registry_detection_and_survey_loader_refusal():
    names = available_loaders()
    assert {"prism", "community-alignment", "blend"} <= set(names) and "preference data" in names["prism"]
    assert is_preference_spec(FIX / "prism") and is_preference_spec(FIX / "blend") and is_preference_spec("blend")
    assert not is_preference_spec("wvs-shares") and not is_preference_spec(FIX / "drhur" / "wvs7_sample.csv")
    with pytest.raises(PluralignError, match="preference data, not a survey"):
        load_dataset(f"prism:{FIX / 'prism'}")
    with pytest.raises(PluralignError, match="not preference data"):
        load_preferences("wvs-shares")


def test_check_pairs_refuses_unusable_pairs():
    rec = PromptRecord(id="x", unit="u", profile=Profile(country="Iran"), messages=(("user", "q"),))
    check_pairs([PreferencePair(rec, "a", "b")])
    with pytest.raises(PluralignError, match="identical") as e:
        check_pairs([PreferencePair(rec, "a", "b"), PreferencePair(rec, "same  text", "same text")], source="pairs.jsonl")
    assert "row 2" in str(e.value) and "pairs.jsonl" in str(e.value)
    with pytest.raises(PluralignError, match="without a profile"):
        check_pairs([PreferencePair(PromptRecord(id="y", unit="u", profile=Profile(), messages=(("user", "q"),)), "a", "b")])
    with pytest.raises(PluralignError, match="empty"):
        check_pairs([PreferencePair(rec, " ", "b")])
