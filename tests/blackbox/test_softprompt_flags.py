"""`pluralign softprompt`'s search flags are the fields of the search's settings (issue 28):
pluralign.blackbox.config declares each once (help, default, accepted values), light to import."""

from __future__ import annotations

import inspect
import subprocess
import sys


def test_search_flags_come_from_the_config_fields():
    from pluralign._fields import settings
    from pluralign.blackbox.config import PopulationConfig, SearchConfig, VSMConfig
    from pluralign.cli._validate import RULES, Choice, Float
    from pluralign.cli.softprompt import softprompt_cmd

    params = inspect.signature(softprompt_cmd).parameters
    fields = {s.name: s for cls in (SearchConfig, PopulationConfig, VSMConfig) for s in settings(cls) if s.meta.get("cli", True)}
    assert {"optimizer", "tokens", "pop", "gens", "de_f", "de_cr", "subspace_dim", "autocast", "reduction"} <= set(fields) <= set(params)
    for name, s in fields.items():
        assert params[name].default.help == s.help
        assert params[name].default.default == s.meta.get("cli_default", s.default), name
    assert params["subspace_dim"].default.default == 500 and SearchConfig().subspace_dim == 0  # the CLI searches a subspace by default
    rules = RULES["softprompt"]
    assert isinstance(rules["de_f"], Float) and (rules["de_f"].lo, rules["de_f"].hi, rules["de_f"].open_lo) == (0, 2, True)
    assert isinstance(rules["optimizer"], Choice) and {"de", "pso", "cmaes", "sep-cmaes", "nsga2"} <= set(rules["optimizer"].choices)
    assert rules["pop"].lo == 2 and rules["tokens"].lo == 1


def test_the_settings_and_the_cli_import_without_torch():
    code = "import sys, pluralign.blackbox.config, pluralign.cli.main; print('torch' in sys.modules, 'numpy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
