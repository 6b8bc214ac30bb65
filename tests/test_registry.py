"""pluralign.registry.Registry: names, collisions, errors naming the choices, lazy entries."""

from __future__ import annotations

import pytest

from pluralign.errors import PluralignError
from pluralign.registry import Registry, RegistryError


def _double(x):
    return 2 * x


def test_register_get_and_names():
    reg: Registry = Registry("widget", field="widget")

    @reg.register("b")
    def b():
        return "b"

    reg.add("a", _double)
    assert reg.get("a") is _double and reg["b"] is b
    assert reg.names() == ["a", "b"] and list(reg) == ["b", "a"]  # names sorted; iteration in registration order
    assert "a" in reg and "c" not in reg and len(reg) == 2
    assert dict(reg.items()) == {"b": b, "a": _double}


def test_register_by_the_objects_name():
    reg: Registry = Registry("method")

    @reg.register()
    class Vanilla:
        name = "vanilla"

    assert reg.get("vanilla") is Vanilla


def test_a_name_registered_twice_is_refused():
    reg: Registry = Registry("metric")
    reg.add("emd", _double)
    with pytest.raises(RegistryError, match="metric 'emd' is registered twice"):
        reg.add("emd", lambda x: x)
    with pytest.raises(RegistryError, match="registered twice"):
        reg.add_lazy("emd", "math:sqrt")
    reg.add("emd", _double)  # the same object again: no clash
    assert reg.get("emd") is _double


def test_unknown_name_lists_the_choices():
    reg: Registry = Registry("optimizer", field="optimizer")
    for n in ("de", "cma", "pso"):
        reg.add(n, n)
    with pytest.raises(PluralignError, match=r"unknown optimizer 'adam' \(available: cma, de, pso\)") as e:
        reg.get("adam")
    assert e.value.field == "optimizer"
    with pytest.raises(KeyError):
        reg["adam"]


def test_lazy_entry_is_loaded_once_on_first_lookup():
    calls = []

    def make():
        calls.append(1)
        return object()

    reg: Registry = Registry("encoder")
    reg.add_lazy("heavy", make)
    reg.add_lazy("sqrt", "math:sqrt")
    assert reg.names() == ["heavy", "sqrt"] and "heavy" in reg and calls == []  # listed without loading
    first = reg.get("heavy")
    assert reg.get("heavy") is first and reg["heavy"] is first and calls == [1]
    import math

    assert reg.get("sqrt") is math.sqrt


def test_modules_are_imported_on_first_lookup():
    from pluralign.data.loaders import LOADERS, PREFERENCE_LOADERS

    assert {"wvs-probe", "wvs-shares"} <= set(LOADERS.names()) and "prism" in PREFERENCE_LOADERS


def test_the_ported_registries_keep_their_names():
    from pluralign.adapters import METHODS as ADAPTERS
    from pluralign.blackbox.optimizers import OPTIMIZERS
    from pluralign.evaluation.methods import METHODS
    from pluralign.evaluation.metrics import METRICS
    from pluralign.training.grpo import REWARDS as GRPO_REWARDS
    from pluralign.training.stages import STAGES
    from pluralign.wordassoc.metrics import REWARDS
    from pluralign.wordassoc.tasks import TEMPLATES

    for reg in (ADAPTERS, OPTIMIZERS, METHODS, METRICS, GRPO_REWARDS, STAGES, REWARDS, TEMPLATES):
        assert isinstance(reg, Registry) and len(reg) > 0
    assert {"cuma", "lora", "dora", "full"} <= set(ADAPTERS) and {"vanilla", "persona", "fewshot"} <= set(METHODS)
    assert {"emd", "jsd"} <= set(METRICS) and "blend-match" in GRPO_REWARDS and "spearman" in REWARDS and "en" in TEMPLATES
    assert STAGES.names() == ["dpo:survey", "dpo:text", "grpo:text", "sft:survey", "sft:text"]
