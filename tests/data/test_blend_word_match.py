"""BLEnD answer matching on whole words (issue 29, part 4): an answer variant counts only when its
words occur in the response as a phrase at word boundaries, after folding case, punctuation,
acute accents and a plural ending. "tea" no longer matches "steak"."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pluralign.data.loaders.blend import answer_in_response, blend_match, match_tokens, normalise_response, phrase_in


@pytest.mark.parametrize("answer,response", [
    ("tea", "Tea"),
    ("tea", "tea."),
    ("tea", "Teas!"),  # plural -s
    ("tea", "I would say green tea, usually."),
    ("teas", "a cup of tea"),  # the answer plural, the response singular
    ("dish", "Several dishes"),  # -es
    ("cherry", "Cherries"),  # -ies <-> -y
    ("tomato", "tomatoes"),
    ("shoe", "new shoes"),
    ("ping-pong", "I'd say ping pong"),  # '-' separates words on both sides
    ("table tennis", "Table-tennis, of course"),
    ("steamed buns", "A steamed bun, of course"),
    ("New Year's Day", "new year's day"),
    ("café", "Cafe"),  # acute accent dropped
    ("football", "(football)"),
    ("乒乓球", "我喜欢乒乓球"),  # a script without spaces: a character sequence
])
def test_whole_word_matches(answer, response):
    assert answer_in_response(answer, normalise_response(response))


@pytest.mark.parametrize("answer,response", [
    ("tea", "steak"),  # the case: a raw substring is not a word
    ("tea", "team sports"),
    ("tea", "instead"),
    ("rice", "price"),
    ("pie", "pierogi"),
    ("ham", "hamburger"),
    ("ham", "graham crackers"),
    ("table tennis", "tennis"),  # only part of the phrase
    ("table tennis", "tennis at the table"),  # every word, but not as the phrase
    ("bus", "bu"),  # no plural folding below three letters
    ("glass", "glas"),  # -ss is not a plural
    ("", "anything"),
    ("-", "a - b"),  # no word in the answer
])
def test_non_matches(answer, response):
    assert not answer_in_response(answer, normalise_response(response))


def test_blend_match_scores_and_no_longer_favours_substrings():
    ans = (("tea",), ("coffee",), ("water",))
    counts = (5, 2, 1)
    assert blend_match("Steak", ans, counts) == (0.0, 0.0)
    assert blend_match("Steak and coffee", ans, counts) == (1.0, pytest.approx(2 / 5))
    assert blend_match("Teas.", ans, counts) == (1.0, 1.0)
    assert blend_match("Answer: Water", ans, counts, prompt="Question: what?\nAnswer:") == (1.0, pytest.approx(1 / 5))
    assert blend_match("", ans, counts) == (0.0, 0.0)
    assert blend_match("tea", (), ()) == (0.0, 0.0)


def test_match_tokens_split_at_punctuation_and_fold_case():
    assert match_tokens("Grandma's Café-au-lait, 乒乓!") == ("grandma", "s", "cafe", "au", "lait", "乒", "乓")
    assert phrase_in(("green", "tea"), ("a", "green", "teas")) and not phrase_in(("green", "tea"), ("tea", "green"))
    assert not phrase_in((), ("tea",))


def test_every_caller_uses_the_same_rule():
    """The GRPO reward and generate-eval's reference scoring go through blend_match, so they follow
    the word rule too (their calls are unchanged)."""
    from pluralign.data.preferences import PromptRecord
    from pluralign.data.profile import Profile
    from pluralign.evaluation.generate import add_references
    from pluralign.training.grpo import blend_match_reward

    assert blend_match_reward(["p", "p"], ["Steak", "green tea"], answers=[[("tea",)], [("tea",)]], answer_counts=[[3], [3]]) == [0.0, 1.0]
    uk, us = Profile(country="United Kingdom"), Profile(country="United States")
    recs = [PromptRecord(id="UK:q", unit="q", profile=uk, messages=(("user", "q?"),), answers=(("steak",),), answer_counts=(2,)),
            PromptRecord(id="US:q", unit="q", profile=us, messages=(("user", "q?"),), answers=(("tea",),), answer_counts=(4,))]
    rep = add_references({"outputs": [{"id": "UK:q"}, {"id": "US:q"}]}, recs, recs)
    # the other region's top answer: "tea" for the UK (does not match "steak"), "steak" for the US
    assert rep["references"]["other_groups_top"]["accuracy"] == 0.0


WORD = st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=3, max_size=8)
SEP = st.sampled_from([" ", ", ", ". ", " - ", "; ", "! ", " (", ") ", "\n", " / "])


@settings(max_examples=200, deadline=None)
@given(answer=st.lists(WORD, min_size=1, max_size=3), before=st.lists(WORD, max_size=4), after=st.lists(WORD, max_size=4),
       seps=st.lists(SEP, min_size=12, max_size=12), upper=st.booleans())
def test_phrase_among_other_words_matches_whatever_the_case_and_punctuation(answer, before, after, seps, upper):
    words = [*before, *answer, *after]
    response = "".join(w + seps[i % len(seps)] for i, w in enumerate(words))
    response = response.upper() if upper else response
    assert answer_in_response(" ".join(answer), response)
    # a plural "s" on the response's last answer word still matches (a word ending in "ss" is no plural)
    plural = [*before, *answer[:-1], answer[-1] + "s", *after]
    if not answer[-1].endswith("s"):
        assert answer_in_response(" ".join(answer), " ".join(plural))


@settings(max_examples=200, deadline=None)
@given(answer=st.text(alphabet="abcdefghijklmnopqrstuvw", min_size=3, max_size=8),
       prefix=st.text(alphabet="abcdefghijklmnopqrstuvwxyz", min_size=1, max_size=4),
       suffix=st.text(alphabet="bcdfghjklmnpqrtvwxz", max_size=4),
       others=st.lists(st.text(alphabet="xyz", min_size=3, max_size=6), max_size=3))
def test_an_answer_glued_inside_a_longer_word_never_matches(answer, prefix, suffix, others):
    glued = prefix + answer + suffix  # letters before the answer: never the same word or its plural
    assert not answer_in_response(answer, " ".join([*others, glued]))
    assert answer_in_response(answer, " ".join([*others, glued, answer]))
