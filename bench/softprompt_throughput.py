"""Soft-prompt population throughput: candidate evaluations per minute, batched vs the per-candidate loop.

A candidate evaluation = scoring one soft prompt (T virtual tokens) on the 24 VSM 2013 items
(one forward row per item, next-token option probabilities, ``logits_to_keep=1``). Compared in the
same run, on the same model and inputs:

* ``batched``        : PopulationEvaluator as the search uses it: the whole population in padded
                       batches of (candidate, item) rows; the chat prefix shared by every item run
                       once per candidate (KV cache reused) and the stems shared by groups of items
                       (items 1-10, 11-14, 21-24) once per (candidate, group);
* ``prefix-only``    : the same without the group stems (the evaluator before the group cache);
* ``no-cache``       : the same batches, every row run in full;
* ``per-candidate``  : the plain loop: one candidate at a time, its 24 items as one batch of full
                       rows (what scoring each candidate with a SoftPromptModel and OptionScorer does);
* ``per-prompt``     : one candidate and one item at a time (optional, ``--per-prompt-candidates``);
* ``batched+bf16``   : ``batched`` with the matrix products in bfloat16 (``autocast="bf16"``; optional,
                       ``--with-autocast``, on the same population as ``batched``; not exact, its Δ log p is reported).

Shapes: ``--shape smollm2`` (SmolLM2-135M: hidden 576, 30 layers, 9 heads, 3 KV heads,
intermediate 1536, vocab 49152, tied embeddings), ``qwen2-0.5b`` (hidden 896, 24 layers, 14 heads,
2 KV heads, intermediate 4864, vocab 151936) or ``small`` (a smoke test); random weights, so nothing
is downloaded. Prompts are random token ids with the structure of the real VSM prompts under
SmolLM2's chat template (measured with its tokenizer): a 24-token prefix shared by all 24 items,
stems of 28 / 13 / 13 tokens shared by items 1-10 / 11-14 / 21-24, rests of 50-96 tokens after the
prefix. Throughput depends only on these shapes.

Besides wall time the process CPU time is recorded: on a machine shared with other jobs the wall
rate is what this run got, and ``idle projection`` = candidates / (CPU seconds / threads) is the rate
the same work would take with the threads to itself (an estimate, labelled as such).

    PYTHONPATH=src python bench/softprompt_throughput.py --shape smollm2 --threads 2 --pop 16 --compare-candidates 4
    PYTHONPATH=src python bench/softprompt_throughput.py --shape qwen2-0.5b --pop 32   # on a GPU
    PYTHONPATH=src python bench/softprompt_throughput.py --shape small --pop 8         # a quick smoke run
"""

from __future__ import annotations

import argparse
import json
import os
import time

import torch

#: lengths of the 24 VSM prompts after the shared prefix (SmolLM2 chat template, measured), item order
PROMPT_LENS = [92, 90, 88, 91, 91, 88, 96, 89, 93, 88, 71, 73, 72, 79, 50, 50, 66, 54, 61, 62, 81, 72, 75, 84]
#: groups of items sharing a stem after the prefix: (item indices, stem length), measured likewise
GROUPS = [(list(range(0, 10)), 28), (list(range(10, 14)), 13), (list(range(20, 24)), 13)]
PREFIX_LEN = 24
SUFFIX_LENS = sorted(PROMPT_LENS)  # kept for older callers

SHAPES = {
    "smollm2": dict(arch="llama", vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                    num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=8192, tie_word_embeddings=True,
                    rope_theta=100000.0),
    "qwen2-0.5b": dict(arch="qwen2", vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                       num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True,
                       rope_theta=1000000.0),
    "small": dict(arch="qwen2", vocab_size=2000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512),
}


def build_model(shape: str, device: str, dtype: torch.dtype):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    spec = dict(SHAPES[shape])
    arch = spec.pop("arch")
    cfg = (LlamaConfig if arch == "llama" else Qwen2Config)(**spec)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = (LlamaForCausalLM if arch == "llama" else Qwen2ForCausalLM)(cfg).to(dtype)
    model.requires_grad_(False)
    return model.eval()


def vsm_shaped_prompts(vocab: int, seed: int = 0) -> list[list[int]]:
    """24 random-id prompts with the VSM structure: shared prefix, group stems, item rests."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda n: torch.randint(10, vocab, (n,), generator=g).tolist()  # noqa: E731
    prefix = rnd(PREFIX_LEN)
    stem = {i: [] for i in range(24)}
    for members, L in GROUPS:
        s = rnd(L)
        for i in members:
            stem[i] = s
    seqs = []
    for i, n in enumerate(PROMPT_LENS):
        rest = rnd(n - len(stem[i]))
        seqs.append(prefix + stem[i] + rest)
    return seqs


def measure(fn, sync, repeats: int = 1) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call: the median over ``repeats``."""
    got = []
    for _ in range(max(1, repeats)):
        sync()
        w, c = time.perf_counter(), time.process_time()
        fn()
        sync()
        got.append((time.perf_counter() - w, time.process_time() - c))
    got.sort()
    return got[len(got) // 2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="smollm2", help="model shape (random weights)")
    ap.add_argument("--small", action="store_true", help="same as --shape small")
    ap.add_argument("--pop", type=int, default=16, help="population scored by the batched evaluator")
    ap.add_argument("--pops", default="", help="several populations for the batched evaluator, e.g. 32,64 (overrides --pop)")
    ap.add_argument("--repeats", type=int, default=1, help="timed repeats per variant (median; 1 on a busy CPU)")
    ap.add_argument("--compare-candidates", type=int, default=4,
                    help="candidates timed for prefix-only, no-cache and the per-candidate loop (rate per candidate; 0 = pop)")
    ap.add_argument("--per-prompt-candidates", type=int, default=0, help="candidates timed one prompt at a time (0 = skip)")
    ap.add_argument("--tokens", type=int, default=10, help="virtual tokens T")
    ap.add_argument("--batch-size", type=int, default=64, help="rows per forward pass for the batched evaluators")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--dtype", choices=("auto", "fp32", "bf16"), default="auto", help="auto = bf16 on CUDA, fp32 on CPU")
    ap.add_argument("--with-autocast", action="store_true", help="also time batched with bf16 matrix products (the same population)")
    ap.add_argument("--json", default="", help="write the table as JSON here")
    a = ap.parse_args()
    shape = "small" if a.small else a.shape

    from pluralign.blackbox.population import PopulationConfig, PopulationEvaluator

    torch.set_num_threads(a.threads)
    cuda = torch.cuda.is_available() and shape != "small"
    device = "cuda" if cuda else "cpu"
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}.get(a.dtype, torch.bfloat16 if cuda else torch.float32)
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = build_model(shape, device, dtype)
    V, H = model.config.vocab_size, model.config.hidden_size
    seqs = vsm_shaped_prompts(V)
    labels = [[5, 6, 7, 8, 9]] * 24

    def ev(bs: int, prefix_cache: bool = True, group_cache: bool = True, autocast: str = "off"):
        return PopulationEvaluator(model, seqs, labels, cfg=PopulationConfig(tokens=a.tokens, batch_size=bs, prefix_cache=prefix_cache,
                                                                             group_cache=group_cache, autocast=autocast))

    emb = model.get_input_embeddings().weight
    g = torch.Generator().manual_seed(1)
    pops = [int(p) for p in a.pops.split(",") if p.strip()] or [a.pop]
    P = max(pops)
    X = emb[torch.randint(10, V, (P * a.tokens,), generator=g).to(emb.device)].reshape(P, a.tokens, H).float()
    k = min(P, a.compare_candidates or P)
    batched = ev(a.batch_size)
    variants = [("batched" if len(pops) == 1 else f"batched P={p}", batched, p) for p in pops]
    n_b = len(variants)
    variants += [("prefix-only", ev(a.batch_size, group_cache=False), k), ("no-cache", ev(a.batch_size, prefix_cache=False), k),
                 ("per-candidate", ev(24, prefix_cache=False), k)]
    loop_i = n_b + 2
    if a.per_prompt_candidates:
        variants.append(("per-prompt", ev(1, prefix_cache=False), min(P, a.per_prompt_candidates)))
    if a.with_autocast:
        variants.append(("batched+bf16", ev(a.batch_size, autocast="bf16"), P))  # the same population as batched
    load0 = os.getloadavg()
    variants[0][1].label_logprobs(X[:1])  # warm-up (one candidate)
    rows, out = [], {}
    for name, e, n in variants:
        e.tokens_run = 0
        if name in ("per-candidate", "per-prompt"):
            fn = lambda e=e, n=n: out.__setitem__(e, torch.cat([e.label_logprobs(X[i : i + 1]) for i in range(n)]))  # noqa: E731
        else:
            fn = lambda e=e, n=n: out.__setitem__(e, e.label_logprobs(X[:n]))  # noqa: E731
        wall, cpu = measure(fn, sync, a.repeats)
        row = {"variant": name, "candidates": n, "wall_s": wall, "cpu_s": cpu, "cand_per_min": 60 * n / wall,
               "cand_per_min_idle_projection": 60 * n / (cpu / a.threads) if not cuda and cpu > 0 else None,
               "tokens_per_candidate": e.tokens_run / (n * max(1, a.repeats)), "forwards": e.n_forward, "load_after": os.getloadavg()[0]}
        rows.append(row)
        print(json.dumps(row), flush=True)
    ref = out[variants[loop_i][1]]
    for r, (name, e, n) in zip(rows, variants):
        got = out[e]
        m = min(n, ref.shape[0], got.shape[0])
        r["max_abs_logprob_diff_vs_loop"] = float((got[:m] - ref[:m]).abs().max())
    loop = rows[loop_i]
    for r in rows:
        r["speedup_vs_loop_wall"] = r["cand_per_min"] / loop["cand_per_min"]
        r["speedup_vs_loop_cpu"] = (loop["cpu_s"] / loop["candidates"]) / (r["cpu_s"] / r["candidates"]) if r["cpu_s"] else None
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(dtype), "torch": torch.__version__, "shape": shape,
            "tokens": a.tokens, "threads": a.threads, "batch_rows": a.batch_size, "pops": pops, "prefix_len": PREFIX_LEN,
            "repeats": a.repeats,
            "load_before": load0, "load_after": os.getloadavg(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if cuda:
        info["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("\n" + json.dumps(info))
    print("\n| variant | candidates timed | wall s | cand/min (wall) | cand/min (idle projection) | tokens run / cand | speed-up vs loop (wall) | (CPU time) | max abs Δ log p vs loop |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        idle = f"{r['cand_per_min_idle_projection']:.1f}" if r["cand_per_min_idle_projection"] else "–"
        cpu = f"{r['speedup_vs_loop_cpu']:.2f}x" if r["speedup_vs_loop_cpu"] else "–"
        print(f"| {r['variant']} | {r['candidates']} | {r['wall_s']:.1f} | {r['cand_per_min']:.1f} | {idle} | {r['tokens_per_candidate']:.0f} | "
              f"{r['speedup_vs_loop_wall']:.2f}x | {cpu} | {r['max_abs_logprob_diff_vs_loop']:.2g} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"info": info, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
