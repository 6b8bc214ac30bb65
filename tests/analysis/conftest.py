"""Fixtures of the analysis tests: tiny trained and evaluated CuMA and LoRA runs (the shared tiny
Llama of tests/conftest.py, the culture-map profile encoder: nothing downloaded)."""

from __future__ import annotations

import shutil

import pytest

from tests.analysis._helpers import COUNTRIES, QUESTIONS, invoke


def _train_and_eval(root, model_dir, method: str, *extra):
    out = root / method
    res = invoke(
        "train", "--method", method, "--task", "distributional", "--model", model_dir, "--data", "wvs-shares",
        "--countries", COUNTRIES, "--questions", QUESTIONS, "--split", "country", "--test-units", "NGA,MEX",
        "--enrich-profile", "--steps", "3", "--batch-size", "4", "--save-steps", "0", "--logging-steps", "1",
        "--no-progress", "--out", out, *extra,
    )
    assert res.exit_code == 0, res.output
    res = invoke("eval", "--model", model_dir, "--adapter", out / "adapter", "--out", out / "eval", "--bootstrap", "50",
                 "--no-plot", "--no-progress")
    assert res.exit_code == 0, res.output
    return out


@pytest.fixture(scope="session")
def tiny_runs(tmp_path_factory, tiny_model_dir):
    """``{"cuma": RUN, "lora": RUN}``: trained 3 steps and evaluated on their 2 held-out countries."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        root = tmp_path_factory.mktemp("runs")
        runs = {
            "cuma": _train_and_eval(root, tiny_model_dir, "cuma", "--profile-encoder", "culture-map"),
            "lora": _train_and_eval(root, tiny_model_dir, "lora"),
        }
    finally:
        torch.set_num_threads(n)
    return runs


@pytest.fixture(scope="session")
def run_without_eval(tiny_runs, tmp_path_factory):
    """A copy of the CuMA training run without its eval/ folder."""
    out = tmp_path_factory.mktemp("noeval") / "cuma"
    shutil.copytree(tiny_runs["cuma"], out, ignore=shutil.ignore_patterns("eval"))
    return out
