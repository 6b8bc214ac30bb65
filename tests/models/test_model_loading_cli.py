"""Bad backbones through the CLI: one ``error:`` line, exit status 2, earlier results untouched."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.models._gguf import write_unsupported_gguf


@pytest.mark.parametrize("kind", ["unsupported-gguf", "missing-folder"])
def test_eval_bad_model_is_one_error_line(tmp_path, monkeypatch, kind):
    from pluralign.cli.main import app

    monkeypatch.setenv("PLURALIGN_CACHE", str(tmp_path / "cache"))
    model = write_unsupported_gguf(tmp_path / "weird.gguf") if kind == "unsupported-gguf" else tmp_path / "nope" / "model"
    out = tmp_path / "runs"
    out.mkdir()
    earlier = out / "summary.json"
    earlier.write_text('{"earlier": true}\n')
    res = CliRunner().invoke(app, ["eval", "--model", str(model), "--max-items", "2", "--out", str(out), "--no-progress", "--no-plot"])
    text = res.output  # stdout and stderr together
    assert res.exit_code == 2, text
    err = [line for line in text.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "Traceback" not in text
    want = "unsupported GGUF architecture 'rwkv6'" if kind == "unsupported-gguf" else "model folder not found"
    assert want in err[0] and str(model) in err[0]
    assert earlier.read_text() == '{"earlier": true}\n'
