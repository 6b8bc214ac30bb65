"""Profile encoders come from one registry (issue 28): a spec part names a registered encoder
(``ENCODERS``) or is a sentence-transformers hub id / folder; an unknown one names the choices; a
new encoder is one decorated builder, usable in specs, concatenations and ``needs_backbone``."""

from __future__ import annotations

import pytest
import torch

from pluralign.data import Profile
from pluralign.errors import PluralignError
from pluralign.models.profile_encoder import (
    ENCODERS,
    CultureMapEncoder,
    _CachedEncoder,
    encoder_choices,
    make_profile_encoder,
    needs_backbone,
    register_encoder,
)
from pluralign.registry import Registry

PROFILES = [Profile(country="Sweden"), Profile(country="Nigeria", age=30), Profile(country="Sweden")]


def test_the_builtin_encoders_are_registered():
    assert isinstance(ENCODERS, Registry)
    assert ENCODERS.names() == ["backbone", "culture-map", "minilm-l6"]
    assert ENCODERS["backbone"].needs_backbone and not ENCODERS["culture-map"].needs_backbone
    assert encoder_choices().startswith("backbone[:LAYER], culture-map[:before=YEAR], minilm-l6, or a sentence-transformers")
    assert needs_backbone("minilm-l6+backbone:3") and not needs_backbone("culture-map") and not needs_backbone("org/backbone")
    enc = make_profile_encoder("culture-map:before=2010")
    assert isinstance(enc, CultureMapEncoder) and enc.before == 2010 and enc.name == "culture-map:before=2010"


def test_an_unknown_encoder_names_the_choices(tmp_path):
    with pytest.raises(PluralignError, match="not found") as e:
        make_profile_encoder(str(tmp_path / "no-such-encoder"))
    msg = str(e.value)
    assert "field 'profile_encoder'" in msg or "no-such-encoder" in msg
    for name in ("backbone[:LAYER]", "culture-map[:before=YEAR]", "minilm-l6", "hub id or folder"):
        assert name in msg
    with pytest.raises(PluralignError, match="empty profile encoder spec .*culture-map"):
        make_profile_encoder(" + ")
    with pytest.raises(PluralignError, match="unknown profile encoder 'nope' \\(available: backbone, culture-map, minilm-l6\\)"):
        ENCODERS.get("nope")
    # the built-in arguments are checked as before
    with pytest.raises(PluralignError, match="culture-map takes ':before=YEAR', got 'culture-map:after=1'"):
        make_profile_encoder("culture-map:after=1")
    with pytest.raises(PluralignError, match="needs the backbone model"):
        make_profile_encoder("culture-map+backbone")
    with pytest.raises(PluralignError, match="minilm-l6 takes no argument"):
        make_profile_encoder("minilm-l6:x")


class _LengthEncoder(_CachedEncoder):
    """The profile text's length, ``scale`` times, ``k`` times side by side."""

    def __init__(self, k: int, scale: float) -> None:
        super().__init__()
        self.name, self.dim, self.scale = f"length:{k}", k, scale

    def _embed(self, profiles):
        return torch.tensor([[self.scale * len(p.describe())] * self.dim for p in profiles])


@pytest.fixture
def length_encoder():
    seen = []

    @register_encoder("length", usage="length[:K]", summary="the profile text's length, K times", needs_backbone=True)
    def build(arg, *, backbone=None, device=None):
        seen.append((arg, backbone, device))
        return _LengthEncoder(int(arg or 1), 1.0 if backbone is None else 2.0)

    yield seen
    ENCODERS._entries.pop("length")


def test_a_registered_encoder_is_usable(length_encoder):
    assert "length" in ENCODERS and "length[:K]" in encoder_choices()
    enc = make_profile_encoder("length:3")
    assert enc.name == "length:3" and enc.dim == 3 and length_encoder == [("3", None, None)]
    x = enc.encode(PROFILES)
    assert x.shape == (3, 3) and x[0, 0] == len(PROFILES[0].describe()) and torch.equal(x[0], x[2]) and len(enc) == 2
    # in a concatenation, with the backbone and device passed through, and counted by needs_backbone
    assert needs_backbone("culture-map+length")
    both = make_profile_encoder("culture-map+length", backbone=("model", "tok"), device="cpu")
    assert both.name == "culture-map+length:1" and length_encoder[-1] == (None, ("model", "tok"), "cpu")
    y = both.encode(PROFILES)
    cm = CultureMapEncoder().encode(PROFILES)
    assert y.shape == (3, cm.shape[1] + 1)
    torch.testing.assert_close(y[:, : cm.shape[1]], cm)
    assert y[1, -1] == 2.0 * len(PROFILES[1].describe())


def test_train_help_lists_every_registered_encoder():
    """The CLI does not import torch to print --help, so its text is written out: every registered
    encoder must appear in it."""
    from typer.testing import CliRunner

    from pluralign.cli.main import app

    res = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "400", "TERM": "dumb"})
    assert res.exit_code == 0
    rows = [" ".join(r.split()) for r in " ".join(res.output.split()).split("│")]
    row = next(r for r in rows if r.startswith("--profile-encoder <"))
    for name in ENCODERS.names():
        assert name in row, name
