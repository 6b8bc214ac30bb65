"""``POST /v1/survey`` gives the option distributions of ``pluralign eval`` for the same items,
profile and adapter (within 1e-5)."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from typer.testing import CliRunner

from pluralign.serve import ServeConfig, create_app
from tests.serve.conftest import MODEL_ID

pytestmark = pytest.mark.usefixtures("one_thread")

ITEMS = [
    {"id": "family", "text": "How important is family in your life?", "options": ["Very important", "Rather important", "Not very important", "Not at all important"]},
    {"id": "agree", "text": "Do you agree?", "options": ["agree", "neither", "disagree"], "ordinal": False},
    {"id": "scale", "text": "On a scale, how strongly?", "options": ["strongly", "somewhat"]},
]
PROFILES = {"JPN": {"country": "Japan", "age": 34, "sex": "female"}, "NGA": {"country": "Nigeria", "settlement": "rural"}}


def _yaml(path):
    lines = ["items:"]
    for it in ITEMS:
        lines.append(f"  - {{id: {it['id']}, text: {json.dumps(it['text'])}, options: {json.dumps(it['options'])}, "
                     f"ordinal: {str(it.get('ordinal', True)).lower()}}}")
    lines.append("groups:")
    for gid, prof in PROFILES.items():
        dist = ", ".join(f"{it['id']}: {json.dumps([1] * len(it['options']))}" for it in ITEMS)
        lines.append(f"  - {{id: {gid}, profile: {json.dumps(prof)}, distributions: {{{dist}}}}}")
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize("method", ["persona", "vanilla"])
def test_survey_agrees_with_pluralign_eval(method, make_engine, cuma_adapter, tiny_model_dir, serve, tmp_path):
    from pluralign.cli.main import app as cli

    out = tmp_path / "ev"
    res = CliRunner().invoke(cli, [str(a) for a in (
        "eval", "--model", tiny_model_dir, "--adapter", cuma_adapter, "--data", _yaml(tmp_path / "q.yaml"), "--split", "none",
        "--method", method, "--bootstrap", "0", "--no-plot", "--no-progress", "--out", out)])
    assert res.exit_code == 0, res.output
    preds = json.loads((out / f"eval-q-{method}.json").read_text())["predictions"]
    want = {(p["group"], p["item_id"]): p["probs"] for p in preds}
    s = serve(create_app(make_engine(adapter=cuma_adapter), ServeConfig()))
    bodies = [{"model": MODEL_ID, "items": ITEMS, "profile": prof, "profile_prompt": method == "persona"} for prof in PROFILES.values()]
    with httpx.Client(base_url=s.url, timeout=60) as c, ThreadPoolExecutor(2) as ex:
        seq = [c.post("/v1/survey", json=b) for b in bodies]
        conc = list(ex.map(lambda b: c.post("/v1/survey", json=b), bodies))  # scored together when they meet
    for prof, r, r2 in zip(PROFILES.values(), seq, conc):
        assert r.status_code == 200 and r2.status_code == 200, (r.text, r2.text)
        for body in (r.json(), r2.json()):
            assert body["method"] == method and body["profile"] == prof
            assert [row["id"] for row in body["results"]] == [it["id"] for it in ITEMS]
            for row in body["results"]:
                assert row["labels"] == [str(i + 1) for i in range(len(row["options"]))]
                assert sum(row["probs"]) == pytest.approx(1.0)
                assert row["probs"] == pytest.approx(want[(prof["country"], row["id"])], abs=1e-5)
    # the routed adapter sees the profile: the two groups' distributions differ even without the persona prompt
    jp = [want[("Japan", it["id"])] for it in ITEMS]
    ng = [want[("Nigeria", it["id"])] for it in ITEMS]
    assert max(abs(a - b) for x, y in zip(jp, ng) for a, b in zip(x, y)) > 1e-4
