from __future__ import annotations

import pytest

from pluralign.blackbox.population import PopulationConfig, PopulationEvaluator
from pluralign.data.items import SurveyItem
from pluralign.data.loaders.hofstede import VSMQuestionnaire, load_vsm_items


@pytest.fixture(scope="session")
def short_vsm():
    """The VSM index structure with one-word items: short prompts keep the tiny-model tests fast."""
    real = load_vsm_items()
    words = ["family", "boss", "survey", "answer", "option", "agree", "important", "life", "woman", "rural", "number", "person"]
    items = tuple(
        SurveyItem(id=f"vsm{i:02d}", text=f"{words[i % 12]} {i}?", options=("1", "2", "3", "4", "5"), category=it.category)
        for i, it in enumerate(real.items, start=1)
    )
    return VSMQuestionnaire(items=items, terms=real.terms, citation=real.citation)


@pytest.fixture(scope="session")
def tiny_evaluator(tiny_llama, tiny_tokenizer, short_vsm):
    """24 short VSM-structured prompts on the tiny Llama, 3 virtual tokens."""
    return PopulationEvaluator.from_questionnaire(
        tiny_llama, tiny_tokenizer, cfg=PopulationConfig(tokens=3, batch_size=48), questionnaire=short_vsm)
