"""Routing topology: the statistics against planted clusters and shuffled labels, the gate recorder
on a real tiny CuMA model (signatures differ between profiles), and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from pluralign.analysis import topology as T
from tests.analysis._helpers import error_lines, invoke


def test_silhouette_matches_sklearn():
    from sklearn.metrics import silhouette_score

    rng = np.random.default_rng(1)
    X = rng.normal(size=(30, 6))
    labels = rng.integers(0, 4, 30)
    labels[0] = 7  # a singleton label scores 0, as in sklearn
    codes = np.unique(labels, return_inverse=True)[1]
    assert T.silhouette(T.distances(X), codes) == pytest.approx(silhouette_score(X, labels), abs=1e-9)


def _planted(n=12, dim=16, sep=3.0, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.normal(size=(n, dim)) * 0.3
    b = rng.normal(size=(n, dim)) * 0.3 + sep / np.sqrt(dim)
    return np.vstack([a, b]), ["zone A"] * n + ["zone B"] * n


def test_planted_clusters_beat_the_shuffled_baseline():
    X, labels = _planted()
    st = T.label_stats(X, labels, neighbours=3, n_perm=300, seed=0)
    sil, knn = st["silhouette"], st["knn"]
    assert sil["observed"] > 0.4 and abs(sil["baseline_mean"]) < 0.1 and sil["observed"] > sil["baseline_mean"] + 5 * sil["baseline_sd"]
    assert sil["p"] == pytest.approx(1 / 301)  # no shuffle reaches it
    assert knn["observed"] == pytest.approx(1.0) and knn["baseline_mean"] < 0.6 and knn["p"] < 0.01


def test_labels_unrelated_to_the_signatures_are_not_significant():
    X, _ = _planted()
    labels = ["zone A", "zone B"] * 12  # alternating: unrelated to the two clusters
    st = T.label_stats(X, labels, neighbours=3, n_perm=300, seed=0)
    assert st["silhouette"]["observed"] < 0.05 and st["silhouette"]["p"] > 0.2 and st["knn"]["p"] > 0.2


def test_unusable_labellings_are_skipped_with_a_reason():
    X, _ = _planted(n=3)
    assert "skipped" in T.label_stats(X, ["a"] * 6)
    assert "skipped" in T.label_stats(X, list("abcdef"))
    st = T.label_stats(X, ["a", "a", None, "b", "b", None], n_perm=10)
    assert st["n_units"] == 4 and "knn" in st


@pytest.mark.parametrize("n", [4, 5, 10, 19, 200])
def test_tsne_perplexity_is_below_the_number_of_groups(n):
    assert 1.0 <= T.perplexity_for(n) < n


def test_map_of_few_groups():
    m = T.embed_2d(np.random.default_rng(0).normal(size=(5, 8)))
    assert np.asarray(m["pca"]).shape == (5, 2) and np.asarray(m["tsne"]).shape == (5, 2) and m["perplexity"] < 5
    m = T.embed_2d(np.random.default_rng(0).normal(size=(3, 8)))
    assert m["tsne"] is None and m["pca"] is not None


def test_recorded_gates_are_the_routers_own_and_differ_between_profiles(tiny_runs):
    """End to end on a tiny trained CuMA run: the recorder sees the same top-k as the model's gates,
    restores the routers, and two profiles with the same question route differently."""
    from pluralign.adapters import gate_probs
    from pluralign.analysis._prep import load_run_model
    from pluralign.analysis.gates import GateRecorder, record_prompts
    from pluralign.analysis.runs import open_run
    from pluralign.data import Profile

    run = open_run(tiny_runs["cuma"])
    model, tok, pkw = load_run_model(run)
    profiles = [Profile(country="Sweden"), Profile(country="Nigeria")]
    prompts = ["How important is family in your life? Options: 1. 2. 3. 4. Answer with the number of one option only."] * 2
    rec = record_prompts(model, tok, prompts, profiles=profiles, profile_kwargs=pkw, batch_size=2)
    assert rec.last.shape == (2, 2, 8) and np.allclose(rec.last.sum(-1), 1.0, atol=1e-5)
    assert not np.allclose(rec.last[0], rec.last[1], atol=1e-4)  # the profile moves the router
    assert not np.allclose(rec.mean[0], rec.mean[1], atol=1e-4)
    # the recorder's top-k at the last token = the experts the model's own gates used
    ids = tok(prompts[0], return_tensors="pt")
    with torch.no_grad(), GateRecorder(model) as gr:
        model(**ids, **pkw(profiles[:1]))
        got = gr.take()
    own = gate_probs(model)
    for key, z in got.items():
        used = set(torch.nonzero(own[key][0, -1] > 0).flatten().tolist())
        assert set(z[0, -1].topk(rec.k).indices.tolist()) == used
    assert all("logits" not in r.__dict__ for r in gr.routers.values())  # restored


def test_cli_topology(tiny_runs, tmp_path):
    res = invoke("analyze", "topology", tiny_runs["cuma"], "--max-items", "2", "--n-perm", "20", "--out", tmp_path / "t")
    assert res.exit_code == 0, res.output
    assert "| answer | zone |" in res.stdout and (tmp_path / "t" / "topology-map.png").stat().st_size > 1000
    r = json.loads((tmp_path / "t" / "topology.json").read_text())
    assert r["schema"] == T.SCHEMA and r["settings"]["n_prompts"] == 12
    assert [u["id"] for u in r["units"]] == sorted(["United States", "Germany", "Thailand", "Nigeria", "Kenya", "Mexico"])
    assert {u["labels"]["zone"] for u in r["units"]} >= {"African-Islamic", "Latin America"}
    sig = np.asarray(r["signatures"]["answer"])
    assert sig.shape == (6, 2, 8) and len({tuple(np.round(s.ravel(), 5)) for s in sig}) == 6  # every country routes its own way
    st = r["stats"]["answer"]["zone"]
    assert st["n_units"] == 6 and "knn" in st and 0 <= st["knn"]["p"] <= 1
    res = invoke("analyze", "topology", tiny_runs["lora"], "--out", tmp_path / "t")
    assert res.exit_code == 2 and "dense" in error_lines(res)[0] and str(tiny_runs["lora"]) in error_lines(res)[0]
    res = invoke("analyze", "topology", tmp_path / "nope", "--out", tmp_path / "t")
    assert res.exit_code == 2 and str(tmp_path / "nope") in error_lines(res)[0]
    res = invoke("analyze", "topology", tiny_runs["cuma"], "--part", "some", "--out", tmp_path / "t")
    assert res.exit_code == 2 and "--part" in error_lines(res)[0]
