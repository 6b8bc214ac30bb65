"""The BLEnD multiple-choice knowledge set: correct answer = the region's top answer, distractors from other regions."""

from __future__ import annotations

import json

import pytest

from pluralign.blackbox.knowledge import blend_region, build_knowledge_set, knowledge_accuracy
from pluralign.errors import PluralignError
from tests.conftest import shared


def test_items_are_well_formed():
    root = shared("blend_cultural_knowledge", "annotations")
    items = build_knowledge_set("US", n=20, seed=0, root=root)
    assert len(items) == 20 and len({it.qid for it in items}) == 20
    us = json.loads((root / "US_data.json").read_text())
    for it in items:
        ann = sorted(us[it.qid]["annotations"], key=lambda a: -a["count"])
        assert it.options[it.answer] == ann[0]["en_answers"][0].strip()
        mine = {s.lower() for a in ann for s in a["en_answers"]}
        assert all(o.lower() not in mine for j, o in enumerate(it.options) if j != it.answer)
    assert build_knowledge_set("US", n=20, seed=0, root=root) == items  # seeded
    assert {it.answer for it in build_knowledge_set("US", n=100, seed=0, root=root)} == {0, 1, 2, 3}  # shuffled


def test_accuracy_on_a_tiny_model(tiny_llama, tiny_tokenizer):
    root = shared("blend_cultural_knowledge", "annotations")
    items = build_knowledge_set("China", n=6, seed=0, root=root)
    res = knowledge_accuracy(tiny_llama, tiny_tokenizer, items, batch_size=6)
    assert res["n"] == 6 and 0.0 <= res["accuracy"] <= 1.0 and res["chance"] == 0.25


def test_region_mapping():
    assert blend_region("USA") == "US" and blend_region("China") == "China" and blend_region("ARA") == "Algeria"
    with pytest.raises(PluralignError, match="no BLEnD region"):
        blend_region("Atlantis")
