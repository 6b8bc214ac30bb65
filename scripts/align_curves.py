"""Training curves of `pluralign wordassoc train` runs: SFT loss and GRPO reward (Spearman) per step.

    python scripts/align_curves.py runs/wa-budget docs/results/align_training.png     # one run
    python scripts/align_curves.py runs/wa-study docs/results/align_training.png      # a study: one line per seed (s0, s1, ...)

RUN_DIR is a run folder (``sft/summary.json``, ``rl/summary.json``) or a `pluralign wordassoc study`
folder, whose ``s<seed>/`` runs are drawn together (the GRPO reward as the mean of 20 steps).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def _runs(run: Path) -> list[tuple[str, Path]]:
    """``[(label, run folder)]``: the folder itself, or the seeds of a study folder."""
    if (run / "sft" / "summary.json").exists() or (run / "rl" / "summary.json").exists():
        return [("", run)]
    seeds = sorted((p for p in run.glob("s*") if p.is_dir() and p.name[1:].isdigit()), key=lambda p: int(p.name[1:]))
    return [(f"seed {p.name[1:]}", p) for p in seeds if (p / "sft" / "summary.json").exists() or (p / "rl" / "summary.json").exists()]


def _read(f: Path) -> dict | None:
    if not f.exists():
        return None
    try:
        doc = json.loads(f.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"error: {f}: not a readable training summary ({e})", file=sys.stderr)
        raise SystemExit(2)
    return doc if isinstance(doc, dict) else None


def main(run: str, out: str) -> None:
    from pluralign._plot import pyplot, save_png

    runs = _runs(Path(run))
    if not runs:
        print(f"error: {run}: no sft/summary.json or rl/summary.json here or in s<seed>/ folders", file=sys.stderr)
        raise SystemExit(2)
    plt = pyplot()
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    w = 20
    titles = ["", ""]
    for i, (label, d) in enumerate(runs):
        colour = f"C{i % 10}"
        sft = _read(d / "sft" / "summary.json")
        if sft and sft.get("losses"):
            every = sft["config"]["logging_steps"]
            a.plot(np.arange(1, len(sft["losses"]) + 1) * every, sft["losses"], color=colour, label=label or None)
            titles[0] = f"SFT, {sft['n_cues']} cues, batch {sft['config']['batch_size']}"
        rl = _read(d / "rl" / "summary.json")
        if rl and rl.get("rewards"):
            r = np.asarray(rl["rewards"], dtype=float)
            if len(runs) == 1:
                b.plot(np.arange(1, len(r) + 1), r, color="0.75", lw=0.8, label="per step")
            if len(r) >= w:
                b.plot(np.arange(w, len(r) + 1), np.convolve(r, np.ones(w) / w, mode="valid"), color=colour,
                       label=f"{label + ', ' if label else ''}mean of {w} steps")
            cfg = rl["config"]
            n_gen = (cfg.get("grpo") or cfg)["num_generations"]  # nested since the GRPO block (issue 28); flat before
            titles[1] = f"GRPO, {n_gen} completions x {cfg['batch_size'] // n_gen} prompts a step"
    a.set_xlabel("SFT step")
    a.set_ylabel("loss (completion tokens)")
    a.set_title(titles[0], fontsize=9)
    if len(runs) > 1:
        a.legend(fontsize=7)
    b.axhline(0, color="k", lw=0.5)
    b.set_xlabel("GRPO step")
    b.set_ylabel("reward (Spearman ρ)")
    b.set_title(titles[1], fontsize=9)
    b.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out, dpi=fig.dpi)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python scripts/align_curves.py RUN_DIR OUT.png\nerror: expected two arguments, RUN_DIR and OUT.png", file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1], sys.argv[2])
