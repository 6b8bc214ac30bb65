"""``pluralign report``: a static page that renders offline in headless Chromium, with the runs'
tables and plots whose files exist; bad input is one error line."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from tests.analysis._helpers import error_lines, invoke

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or (
    "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)


@pytest.fixture(scope="module")
def report(tiny_runs, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "rep"
    res = invoke("report", tiny_runs["cuma"], tiny_runs["lora"], "--out", out, "--topology", "--max-items", "2", "--n-perm", "20")
    assert res.exit_code == 0, res.output
    return out


def test_report_holds_the_tables_and_plots_of_the_runs(report, tiny_runs):
    import json

    html = (report / "index.html").read_text()
    for section in ("Runs", "Metrics", "Mean collapse", "Routing topology", "Training and search", "Configuration and split"):
        assert f">{section}" in html
    assert html.count("<table") >= 6
    for ref in ("ref:uniform", "ref:train_mean", "ref:culture_map_knn"):
        assert ref in html
    srcs = re.findall(r'<img src="([^"]+)"', html)
    assert len(srcs) >= 6
    for s in srcs:
        assert not re.match(r"[a-z]+:", s) and (report / s).is_file() and (report / s).stat().st_size > 500
    assert "<script" not in html and not re.search(r'(href|src)="(https?:)?//', html)  # nothing from the network
    # numbers come from the runs' files: the EMD of the CuMA result as the eval summary prints it
    r = json.loads(next((tiny_runs["cuma"] / "eval").glob("eval-*.json")).read_text())
    iv = r["intervals"]["metrics"]["emd"]
    assert f"{r['metrics']['emd']:.3f} [{iv['lo']:.3f}, {iv['hi']:.3f}]" in html
    assert "lora" in html and "no router" in html  # the dense run gets a note, not a topology


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install -y chromium) : cannot render the report")
def test_report_renders_in_headless_chromium(report, tmp_path):
    from matplotlib.image import imread

    shot = tmp_path / "shot.png"
    cmd = [CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}", "--window-size=1200,2000",
           "--hide-scrollbars", (report / "index.html").resolve().as_uri()]
    subprocess.run(cmd, capture_output=True, timeout=120, check=False)
    assert shot.exists(), "chromium wrote no screenshot"
    img = imread(shot)
    assert img.shape[0] == 2000 and img.shape[1] == 1200
    gray = img[..., :3].mean(-1)
    assert gray.std() > 0.05  # not blank: text, tables and plots
    assert (gray < 0.5).mean() > 0.005  # dark pixels (text, bars)


def test_report_bad_input(run_without_eval, tmp_path):
    res = invoke("report", tmp_path / "nope", "--out", tmp_path / "r")
    assert res.exit_code == 2 and len(error_lines(res)) == 1 and str(tmp_path / "nope") in error_lines(res)[0]
    res = invoke("report", run_without_eval, "--out", tmp_path / "r")
    assert res.exit_code == 2 and str(run_without_eval) in error_lines(res)[0] and "eval" in error_lines(res)[0]
    assert not (tmp_path / "r" / "index.html").exists()


def test_report_of_a_soft_prompt_search(tmp_path):
    """A soft-prompt run (results.json + log.jsonl of generations) gets its convergence plot."""
    import json

    sp = tmp_path / "sp"
    sp.mkdir()
    (sp / "results.json").write_text(json.dumps({"model": "tiny", "naive": {"loss": 90.0}, "in-context": {"loss": 70.0},
                                                 "search": {"optimizer": "de", "loss": 40.0, "generations_run": 3, "evaluations": 24}}))
    (sp / "log.jsonl").write_text("".join(json.dumps({"gen": g, "best": b, "gen_mean": b + 10}) + "\n"
                                          for g, b in enumerate([60.0, 50.0, 40.0])))
    res = invoke("report", sp, "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert "softprompt-convergence.png" in html and (tmp_path / "r" / "softprompt-convergence.png").exists()
    assert "40.000" in html  # the search loss, from results.json


def test_report_includes_earlier_analysis_files(tiny_runs, tmp_path):
    res = invoke("analyze", "overlap", tiny_runs["cuma"], "--max-items", "1", "--n-consensus", "1", "--max-units", "3",
                 "--out", tmp_path / "ov")
    assert res.exit_code == 0, res.output
    res = invoke("report", tiny_runs["cuma"], "--no-collapse", "--analysis", tmp_path / "ov" / "overlap.json", "--out", tmp_path / "r")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "r" / "index.html").read_text()
    assert ">Routing overlap" in html and (tmp_path / "r" / "cuma-overlap.png").is_file() and 'src="cuma-overlap.png"' in html
    bad = tmp_path / "ov" / "not-an-analysis.json"
    bad.write_text("{}")
    res = invoke("report", tiny_runs["cuma"], "--analysis", bad, "--out", tmp_path / "r2")
    assert res.exit_code == 2 and str(bad) in error_lines(res)[0] and "--analysis" in error_lines(res)[0]
