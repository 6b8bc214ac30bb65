"""An adapter refuses a backbone of the same shape with other weights (issue 27, class 7)."""

from __future__ import annotations

import pytest

from pluralign.errors import PluralignError


def test_same_shape_other_weights_is_refused(tmp_path):
    from conftest import make_tiny_model

    from pluralign.adapters import adapter_config, build_adapted_model, load_adapter, save_adapter

    model = build_adapted_model(make_tiny_model("llama", seed=0), "lora", adapter_config("lora"))
    save_adapter(model, tmp_path / "adapter", base_model="tiny-0")
    load_adapter(make_tiny_model("llama", seed=0), tmp_path / "adapter")  # the same weights: fine
    with pytest.raises(PluralignError, match="other weights"):
        load_adapter(make_tiny_model("llama", seed=1), tmp_path / "adapter")
