"""Profiles (validation, fixed-order linearisation, keys) and survey items."""

from __future__ import annotations

import pytest

from pluralign.data import PROFILE_FIELDS, Profile, SurveyItem
from pluralign.errors import PluralignError

FULL = dict(
    country="Thailand", age=55, sex="female", education="Upper secondary", religion="Buddhist",
    settlement="rural", income=8, language="Thai", marital_status="Married", employment="Retired",
    region="Chiang Mai",
)


def test_full_profile_linearisation_is_exact_and_in_fixed_order():
    p = Profile(**FULL, extra=(("ethnicity", "Thai"),))
    assert p.describe() == (
        "A 55-year-old Buddhist woman living in rural Chiang Mai, Thailand, with upper secondary education, "
        "in the 8th income decile, married, retired, speaking Thai, ethnicity: Thai."
    )
    assert p.key() == (
        "country=Thailand|age=55|sex=female|education=Upper secondary|religion=Buddhist|settlement=rural|"
        "income=8|language=Thai|marital_status=Married|employment=Retired|region=Chiang Mai|ethnicity=Thai"
    )


def test_linearisation_independent_of_input_order_and_aliases():
    a = Profile.from_dict(dict(FULL))
    b = Profile.from_dict(dict(reversed(list({**FULL, "sex": "F", "settlement": "Village"}.items()))))
    assert a == b and a.key() == b.key() and a.describe() == b.describe()
    # the key of a profile follows PROFILE_FIELDS, not the order the caller gave
    assert [part.split("=")[0] for part in a.key().split("|")] == [f for f in PROFILE_FIELDS if f in FULL]


@pytest.mark.parametrize(
    "profile, text",
    [
        (Profile(country="Netherlands", religion="no religion"), "A person living in the Netherlands, with no religion."),
        (Profile(age=18, sex="male"), "An 18-year-old man."),
        (Profile(age_band="35-44 years", sex="female", country="Japan"), "A woman aged 35-44 living in Japan."),
        (Profile(), "A person."),
    ],
)
def test_partial_profiles(profile, text):
    assert profile.describe() == text


def test_key_is_stable_and_distinguishes_profiles():
    assert Profile(country="Japan", age=30).key() == Profile.from_dict({"age": "30", "country": "Japan"}).key()
    assert Profile(country="Japan", age=30).key() != Profile(country="Japan", age=31).key()
    assert Profile().key() == "<empty>" and Profile().is_empty()
    assert Profile(**FULL).only("country") == Profile(country="Thailand")


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(age=0), "age"),
        (dict(age=200), "age"),
        (dict(age=True), "age"),
        (dict(age="55"), "age"),
        (dict(sex="x"), "sex"),
        (dict(settlement="moon"), "settlement"),
        (dict(income=11), "income"),
        (dict(income=0), "income"),
    ],
)
def test_profile_validation(kwargs, field):
    with pytest.raises(PluralignError) as ei:
        Profile(**kwargs)
    assert ei.value.field == field
    assert f"field '{field}'" in str(ei.value)


def test_from_dict_errors_name_file_row_field():
    with pytest.raises(PluralignError) as ei:
        Profile.from_dict({"country": "Japan", "hair": "red"}, file="people.tsv", row=3)
    assert str(ei.value).startswith("people.tsv, row 3, field 'hair': unknown profile field")
    with pytest.raises(PluralignError) as ei:
        Profile.from_dict({"age": "abc"}, file="people.tsv", row=2)
    assert str(ei.value).startswith("people.tsv, row 2, field 'age'")
    with pytest.raises(PluralignError) as ei:
        Profile.from_dict({"sex": "unknown"}, file="people.tsv", row=7)
    assert "row 7" in str(ei.value) and "field 'sex'" in str(ei.value)
    # unknown fields go to ``extra`` only when asked; empty values are dropped
    p = Profile.from_dict({"country": "Japan", "hair": "red", "age": "", "income": "nan"}, allow_extra=True)
    assert p.extra == (("hair", "red"),) and p.age is None and p.income is None


def test_profile_round_trip():
    p = Profile(**FULL, extra=(("ethnicity", "Thai"),))
    assert Profile.from_dict(p.to_dict()) == p


def test_survey_item_codes_and_errors():
    it = SurveyItem(id="Q1", text="How important is family?", options=("Very", "Rather", "Not very", "Not at all"))
    assert it.codes == ("1", "2", "3", "4") and it.n_options == 4
    assert it.index_of_code("3") == 2 and it.index_of_code(3) == 2 and it.index_of_code("3.0") == 2
    with pytest.raises(PluralignError) as ei:
        it.index_of_code("7", file="a.tsv", row=4, field_name="answer")
    assert str(ei.value).startswith("a.tsv, row 4, field 'answer': answer '7' is not an option of Q1")
    with pytest.raises(PluralignError, match="at least two options"):
        SurveyItem(id="Q2", text="?", options=("only",))
    with pytest.raises(PluralignError, match="3 codes for 2 options"):
        SurveyItem(id="Q3", text="?", options=("a", "b"), codes=("1", "2", "3"))
    assert SurveyItem.from_dict(it.to_dict()) == it
