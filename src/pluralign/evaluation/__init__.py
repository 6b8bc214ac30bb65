"""Evaluation: option scoring, metrics, prompting methods, the runner and reports."""

from pluralign.evaluation.methods import METHODS, get_method, register_method
from pluralign.evaluation.metrics import METRICS, emd, entropy, jsd
from pluralign.evaluation.runner import EvalConfig, compute_metrics, evaluate, predict
from pluralign.evaluation.scoring import OptionScore, OptionScorer, option_labels

__all__ = [
    "METHODS", "METRICS", "EvalConfig", "OptionScore", "OptionScorer", "compute_metrics", "emd", "entropy",
    "evaluate", "get_method", "jsd", "option_labels", "predict", "register_method",
]
