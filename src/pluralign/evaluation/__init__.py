"""Evaluation: option scoring, metrics, prompting methods, the runner and reports; a whole run
(split replay, model with adapter or soft prompt, every method, the output set) is
:func:`evaluate_run` (:mod:`pluralign.evaluation.run`).

The names below load their module on first use, so that ``import pluralign.evaluation.run`` (the
CLI, at start-up) does not import torch."""

from __future__ import annotations

import importlib

#: exported name -> the submodule that defines it
_EXPORTS = {
    "METHODS": "methods", "get_method": "methods", "register_method": "methods",
    "METRICS": "metrics", "emd": "metrics", "entropy": "metrics", "jsd": "metrics",
    "EvalRunConfig": "run", "EvalRunResult": "run", "evaluate_run": "run",
    "EvalConfig": "runner", "compute_metrics": "runner", "evaluate": "runner", "predict": "runner",
    "OptionScore": "scoring", "OptionScorer": "scoring", "option_labels": "scoring",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{mod}"), name)


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
