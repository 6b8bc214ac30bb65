"""Tables of word-association results (``pluralign wordassoc report`` and the study's report).

:func:`wordassoc_tables`: every metric with its bootstrap interval over cues, the distinct words per
cue, P@N at N generated words; the paired changes between models; the same on the cues held out for
real (no reversed pair in the model's training data, :mod:`pluralign.wordassoc.heldout`).
:func:`transfer_comparisons` / :func:`transfer_table`: the WVS transfer of each model against the first
(:func:`pluralign.wordassoc.transfer.compare_transfer`), the same table in both reports.
"""

from __future__ import annotations


def markdown_table(header: list, rows: list[list]) -> str:
    fmt = lambda v: f"{v:.3f}" if isinstance(v, float) else str(v)  # noqa: E731
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def _fixed(res: dict) -> dict:
    """A generation result's P@N at N generated words (``n_words``, ``P@N``, ``per_cue``, ``interval``), or {}."""
    return res.get("fixed_words") or {}


def _fixed_value(fw: dict) -> float:
    n = fw["n_words"]
    return fw[f"P@{n}"]


def wordassoc_tables(rs: list[dict], names: list[str]) -> str:
    """The markdown of ``wordassoc report`` without the transfer table: every metric with its interval,
    distinct words per cue, P@N at N generated words; the paired changes; the same on the cues with no
    reversed pair in the model's training data ("held out for real")."""
    from pluralign.wordassoc.stats import LEVEL, N_BOOT, fmt_interval, paired_change

    level = int(100 * LEVEL)
    header = ["model", "cues", "P@5", "P@10", "P@40", "Spearman", "listed a candidate", "distinct words / cue", "P@N at N words"]
    rows = []
    for n, r in zip(names, rs):
        g, k = r.get("generation", {}), r.get("ranking", {})
        dw = g.get("distinct_words", {})
        fw = _fixed(g)
        fcell = "–"
        if fw:
            iv = fw.get("interval") or {}
            v = _fixed_value(fw)
            fcell = (f"{v:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]" if iv.get("low") is not None else f"{v:.3f}") + f" (N={fw['n_words']})"
        rows.append([n, r.get("n_eval_cues", "")] + [_with_interval(g, f"P@{kk}") for kk in (5, 10, 40)]
                    + [_with_interval(k, "spearman"), k.get("listed_a_candidate", ""),
                       f"{dw['mean']:.1f} (median {dw['median']:.0f})" if dw.get("n_cues") else "–", fcell])
    text = markdown_table(header, rows) + "\n"
    text += (f"\nBrackets: {level} % percentile bootstrap intervals over cues ({N_BOOT} replicates). P@K: of the first K distinct "
             "generated words, the share some participant gave, over K (missing words are misses, so it falls with fewer distinct "
             "words). P@N at N words: every cue topped up to N distinct words by more samples first.\n")

    def changes(get) -> list[list[str]]:
        out = []
        for i in range(1, len(rs)):
            for j in sorted({0, i - 1}):
                crow = [f"{names[j]} → {names[i]}"]
                for metric in ("P@5", "P@10", "fixed", "spearman"):
                    a, b = get(rs[j], metric), get(rs[i], metric)
                    if not a or not b:
                        crow += ["–", "–"]
                        continue
                    ch = paired_change(a, b)
                    crow += [fmt_interval(ch["diff"]), fmt_interval(ch["relative"], pct=True)]
                out.append(crow)
        return out

    def per_cue(r: dict, metric: str, clean: bool = False) -> dict | None:
        task = "ranking" if metric == "spearman" else "generation"
        res = r.get(task, {})
        if clean:
            res = res.get("clean") or {}
        if metric == "fixed":
            return _fixed(res).get("per_cue")
        return res.get("per_cue", {}).get(metric)

    ch_head = ["change", "Δ P@5", "relative P@5", "Δ P@10", "relative P@10", "Δ P@N at N words", "relative", "Δ Spearman",
               "relative Spearman"]
    crows = changes(lambda r, m: per_cue(r, m))
    if crows:
        text += "\n" + markdown_table(ch_head, crows) + "\n"
        text += (f"\nPaired over the cues both evaluations hold ({level} % bootstrap intervals, the same resampled cues for "
                 "both); relative = mean(new) / mean(base) − 1, as the ALIGN paper reports P@5; – where the baseline "
                 "mean is 0 or a result lacks per-cue values.\n")
    if any(r.get("generation", {}).get("clean") or r.get("ranking", {}).get("clean") for r in rs):
        hrows = []
        for n, r in zip(names, rs):
            h = r.get("held_out_pairs") or r.get("generation", {}).get("held_out_pairs") or {}
            g, k = r.get("generation", {}).get("clean") or {}, r.get("ranking", {}).get("clean") or {}
            fw = _fixed(g)
            hrows.append([n, f"{h.get('clean_cues', '–')} of {r.get('n_eval_cues', '–')}", h.get("reversed_pairs", "–"),
                          _with_interval(g, "P@5") if g else "–",
                          f"{_fixed_value(fw):.3f}" if fw else "–",
                          _with_interval(k, "spearman") if k else "–", h.get("source", "–")])
        text += "\n" + markdown_table(["model", "cues held out for real", "reversed pairs left out", "P@5", "P@N at N words",
                                        "Spearman", "training data checked"], hrows) + "\n"
        text += ("\nHeld out for real: the evaluated cues none of whose pairs (cue, response) has its reversed pair (response, cue) "
                 "in the model's training data (the reversed pair of a held-out pair teaches the association from the other side). "
                 "Models trained with --held-out-pairs exclude have none, so their rows equal the table above.\n")
        crows = changes(lambda r, m: per_cue(r, m, clean=True))
        if crows:
            text += "\n" + markdown_table(ch_head, crows) + "\n\nThe same paired changes over the cues held out for real in both evaluations.\n"
    return text


def transfer_comparisons(rs: list[dict]) -> list[dict] | None:
    """:func:`~pluralign.wordassoc.transfer.compare_transfer` of each result after the first against the
    first (the baseline), on the transfer items the baseline was scored on; None when a result has no
    transfer part or there is nothing to compare."""
    from pluralign.wordassoc.transfer import TransferConfig, compare_transfer, transfer_dataset

    if len(rs) < 2 or not all("transfer" in r for r in rs):
        return None
    base = rs[0]["transfer"]
    c = base["config"]
    tc = TransferConfig(countries=tuple(c["countries"]), target=c["target"], n_tension=c["n_tension"], n_items=c["n_items"],
                        seed=c["seed"])
    test, tension, _ = transfer_dataset(tc)
    return [compare_transfer(base["result"], r["transfer"]["result"], test, tension, tc) for r in rs[1:]]


def transfer_table(rs: list[dict], names: list[str], cmps: list[dict] | None = None) -> str:
    """The transfer rows (:func:`~pluralign.wordassoc.transfer.transfer_rows`) of each model against the
    first, as markdown; "" when the results have no transfer part. ``cmps``: their
    :func:`transfer_comparisons`, when the caller has them already."""
    from pluralign.wordassoc.transfer import transfer_rows

    cmps = transfer_comparisons(rs) if cmps is None else cmps
    if not cmps:
        return ""
    rows = [row for n, cmp in zip(names[1:], cmps) for row in transfer_rows(cmp, f"{names[0]} → {n}")]
    return markdown_table(["change", "country", "items", "JSD", "EMD", "high-tension answers moved"], rows) + "\n"


def _with_interval(res: dict, metric: str) -> str:
    """``0.093 [0.071, 0.117]`` from a result's ``intervals`` (older results: the bare value)."""
    iv = res.get("intervals", {}).get(metric)
    if iv and iv.get("low") is not None:
        return f"{iv['mean']:.3f} [{iv['low']:.3f}, {iv['high']:.3f}]"
    v = res.get(metric, "")
    return f"{v:.3f}" if isinstance(v, float) else v


__all__ = ["markdown_table", "wordassoc_tables", "transfer_comparisons", "transfer_table"]
