"""Read the searched prompts of an earlier soft-prompt study again under every VSM convention (issue 29).

    python scripts/softprompt_reread.py docs/results/softprompt_study.json runs/sp-study-c-free/summary.json

The first study (``docs/results/softprompt_study.json``) searched the fixed-C L1 (``l1-c50``) on the
original item wording and stored each best prompt's dimension scores on that wording (C = 50 added).
Subtracting C gives the raw index values, which the C-free read-outs of
:mod:`pluralign.blackbox.objective` need; the calibration (the model without a prompt and the
calibration countries' in-context scores) comes from a study that recorded one (the second
argument: any ``softprompt_study.py`` summary made since issue 29). No model is loaded: the
numbers are arithmetic on stored scores. Only the original wording can be read again, because the
first study kept no raw scores of the other wordings.

Prints one Markdown table: per target and configuration, the mean over seeds of each convention for
the searched prompts, naive beside it and the change from naive. The recomputed ``l1-c50`` must
equal the stored loss (checked: a mismatch stops with an error, since it would mean the scores were
not what the study searched).
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

CONVENTIONS = ("l1-c50", "l1-calibrated", "diff")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        _fail(f"{path}: no such file ({what})")
    except (OSError, json.JSONDecodeError) as e:
        _fail(f"{path}: not a readable JSON summary ({what}): {e}")


def reread(old: dict, calibration: dict) -> tuple[dict, dict]:
    """Per (target, variant): the list of read-outs of each seed; per target: naive's read-outs (original wording)."""
    from pluralign.blackbox.objective import Calibration, Objective, readout_table
    from pluralign.blackbox.vsm import VSMConfig
    from pluralign.data.loaders.hofstede import DIMENSIONS, country_target

    vsm = VSMConfig()
    cal = Calibration.from_dict(calibration)
    obj = Objective("diff", vsm=vsm, calibration=cal)
    C = np.array([vsm.constants[d] for d in DIMENSIONS])
    runs: dict = defaultdict(list)
    naive: dict = {}
    for name, r in sorted(old.get("runs", {}).items()):
        tgt = country_target(r["code"])
        raw = np.array([r["scores"][d] for d in DIMENSIONS]) - C
        ro = readout_table(obj, {"original": raw}, tgt)["original"]
        if abs(ro["l1-c50"] - r["loss"]) > 1e-6:
            _fail(f"{name}: recomputed l1-c50 {ro['l1-c50']:.4f} differs from the stored loss {r['loss']:.4f}")
        variant = f"{r['optimizer']} {'full' if not r.get('subspace_dim', r.get('dim')) else 'd=' + str(r['dim'])}"
        runs[(tgt.code, variant)].append(ro)
        if tgt.code not in naive:
            naive[tgt.code] = readout_table(obj, {"original": np.asarray(cal.naive["original"])}, tgt)["original"]
    return runs, naive


def markdown(runs: dict, naive: dict, order: list[str] | None = None) -> str:
    """The table; targets in ``order`` (the earlier study's baselines order) when given."""
    codes = [c for c in (order or []) if c in naive] + [c for c in naive if c not in (order or [])]
    head = "| target | prompts | " + " | ".join(f"{c}: naive → searched (change)" for c in CONVENTIONS) + " |"
    lines = [head, "|" + "---|" * (2 + len(CONVENTIONS))]
    for code in codes:
        for (c, variant), ros in runs.items():
            if c != code:
                continue
            cells = []
            for conv in CONVENTIONS:
                n0 = naive[code][conv]
                m = float(np.mean([ro[conv] for ro in ros]))
                cells.append(f"{n0:.2f} → **{m:.2f}** ({100 * (m - n0) / n0:+.0f} %)")
            lines.append(f"| {code} | {variant} (n={len(ros)}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2 or argv[0] in ("-h", "--help"):
        print(__doc__)
        raise SystemExit(0 if argv and argv[0] in ("-h", "--help") else 2)
    old = _read(Path(argv[0]), "the earlier study's summary")
    new = _read(Path(argv[1]), "a study summary with a calibration")
    if "calibration" not in new:
        _fail(f"{argv[1]}: no calibration recorded (made before issue 29?): give a summary of a study run since")
    from pluralign.data.loaders.hofstede import country_target

    order = [country_target(c).code for c in old.get("baselines", {})]
    out = markdown(*reread(old, new["calibration"]), order=order)
    print(out)
    return out


if __name__ == "__main__":
    main()
