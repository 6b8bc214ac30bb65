"""Training curves of a `pluralign wordassoc train` run: SFT loss and GRPO reward (Spearman) per step.

    python scripts/align_curves.py runs/wa-budget docs/results/align_training.png
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def main(run: str, out: str) -> None:
    from pluralign.analysis._plot import pyplot, save_png

    plt = pyplot()

    sft = json.loads((Path(run) / "sft" / "summary.json").read_text())
    rl = json.loads((Path(run) / "rl" / "summary.json").read_text())
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=110)
    every = sft["config"]["logging_steps"]
    a.plot(np.arange(1, len(sft["losses"]) + 1) * every, sft["losses"])
    a.set_xlabel("SFT step")
    a.set_ylabel("loss (completion tokens)")
    a.set_title(f"SFT, {sft['n_cues']} cues, batch {sft['config']['batch_size']}", fontsize=9)
    r = np.asarray(rl["rewards"], dtype=float)
    w = 20
    b.plot(np.arange(1, len(r) + 1), r, color="0.75", lw=0.8, label="per step")
    if len(r) >= w:
        b.plot(np.arange(w, len(r) + 1), np.convolve(r, np.ones(w) / w, mode="valid"), label=f"mean of {w} steps")
    b.axhline(0, color="k", lw=0.5)
    b.set_xlabel("GRPO step")
    b.set_ylabel("reward (Spearman ρ)")
    b.set_title(f"GRPO, {rl['config']['num_generations']} completions x {rl['config']['batch_size'] // rl['config']['num_generations']} prompts a step",
                fontsize=9)
    b.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, out, dpi=fig.dpi)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        print("usage: python scripts/align_curves.py RUN_DIR OUT.png\nerror: expected two arguments, RUN_DIR and OUT.png", file=sys.stderr)
        raise SystemExit(2)
    main(sys.argv[1], sys.argv[2])
