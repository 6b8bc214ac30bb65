"""Assemble BENCHMARKS.md from the per-benchmark result pages in bench/results/ (headings shifted one
level down). Run from the repository root after updating a page: ``python bench/assemble.py``."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ORDER = ["score_throughput.md", "moe_lora_speed.md", "softprompt_throughput.md", "wordassoc.md", "train_throughput.md", "serve_load.md"]
HEADER = (ROOT / "bench" / "BENCHMARKS_HEADER.md").read_text()


def main() -> None:
    parts = [HEADER.rstrip() + "\n"]
    for name in ORDER:
        text = (ROOT / "bench" / "results" / name).read_text()
        text = re.sub(r"^(#+) ", lambda m: "#" + m.group(1) + " ", text, flags=re.M)
        parts.append(f"\n<!-- from bench/results/{name} -->\n" + text.rstrip() + "\n")
    out = ROOT / "BENCHMARKS.md"
    out.write_text("\n".join(parts))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
