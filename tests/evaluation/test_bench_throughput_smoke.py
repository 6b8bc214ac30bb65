"""bench/score_throughput.py on a tiny model: our scorer and lm-eval's multiple-choice
log-likelihood pick the same option for every item (needs the ``bench`` extra: lm-eval)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.mark.skipif(importlib.util.find_spec("lm_eval") is None, reason="lm-eval not installed (pip install -e .[bench])")
def test_bench_agrees_with_lm_eval(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    sys.modules.pop("score_throughput", None)
    import score_throughput

    out = tmp_path / "bench.json"
    row = score_throughput.main(["--model", str(tiny_model_dir), "--device", "cpu", "--items", "12", "--batch-size", "4",
                                 "--countries", "USA,DEU,NGA", "--threads", "1", "--repeats", "2", "--out", str(out)])
    assert row["items"] == 12 and row["options"] >= 24
    assert row["agreement"] == 1.0
    # option log-prob differences agree up to fp32 noise (lm-eval adds the same log P("\n") to every option)
    assert row["max_abs_centered_logprob_diff"] < 1e-3
    assert len(row["ours_s_all"]) == len(row["lmeval_s_all"]) == 2 and row["ours_s"] == min(row["ours_s_all"])
    assert row["ratio"] == pytest.approx(row["ours_items_per_s"] / row["lmeval_items_per_s"])
    assert out.exists() and "| ratio |" in score_throughput.table([row]).splitlines()[0]
