"""Soft-prompt population throughput: candidate evaluations per second, batched vs one at a time.

A candidate evaluation = scoring one soft prompt (T virtual tokens) on the 24 VSM 2013 items
(one forward row per item, next-token option probabilities). Compared, on the same model:

* ``batched``      : the whole population in padded batches of (candidate, item) rows with the shared
                     chat prefix run once per candidate (KV cache reused) - PopulationEvaluator;
* ``batched-nocache``: the same without prefix reuse (every row runs in full);
* ``per-candidate``: one candidate at a time (its 24 items batched);
* ``per-prompt``   : one candidate and one item at a time (one forward per prompt, the plain loop).

The model is Qwen2-0.5B-shaped with random weights in bf16 (hidden 896, 24 layers, 14 heads, 2 KV
heads, intermediate 4864, vocab 151936): no weights are downloaded. Prompts are random token ids
with the length structure of the real VSM prompts under SmolLM2's chat template (a 24-token shared
prefix, suffixes of 50-96 tokens), so no tokenizer is needed; throughput depends only on shapes.

    PYTHONPATH=src python bench/softprompt_throughput.py            # GPU, P = 32 (and 64, 128)
    PYTHONPATH=src python bench/softprompt_throughput.py --small     # a CPU smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

#: suffix lengths of the 24 VSM prompts after the shared prefix (SmolLM2 chat template, measured)
SUFFIX_LENS = [50, 50, 54, 61, 62, 66, 71, 72, 72, 73, 75, 79, 81, 84, 88, 88, 88, 89, 90, 91, 91, 92, 93, 96]
PREFIX_LEN = 24


def build_model(small: bool, device: str, dtype: torch.dtype):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    if small:
        cfg = Qwen2Config(vocab_size=2000, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                          num_key_value_heads=2, max_position_embeddings=512)
    else:
        cfg = Qwen2Config(vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                          num_key_value_heads=2, max_position_embeddings=32768, tie_word_embeddings=True, rope_theta=1000000.0)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    with torch.device(device):
        model = Qwen2ForCausalLM(cfg).to(dtype)
    model.requires_grad_(False)
    return model.eval()


def timed(fn, repeats: int, sync) -> float:
    fn()  # warm-up
    sync()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--small", action="store_true", help="tiny model on CPU (smoke test)")
    ap.add_argument("--pops", default="32,64,128", help="population sizes")
    ap.add_argument("--tokens", type=int, default=10, help="virtual tokens T")
    ap.add_argument("--batch-size", type=int, default=768, help="rows per forward pass for the batched evaluator")
    ap.add_argument("--per-prompt-candidates", type=int, default=2, help="candidates timed in the per-prompt loop (rate extrapolated)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats (median)")
    ap.add_argument("--json", default="", help="write the table as JSON here")
    a = ap.parse_args()

    from pluralign.blackbox.population import PopulationConfig, PopulationEvaluator

    cuda = torch.cuda.is_available() and not a.small
    device = "cuda" if cuda else "cpu"
    dtype = torch.bfloat16 if cuda else torch.float32
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    model = build_model(a.small, device, dtype)
    V = model.config.vocab_size
    g = torch.Generator().manual_seed(0)
    prefix = torch.randint(10, V, (PREFIX_LEN,), generator=g).tolist()
    seqs = [prefix + torch.randint(10, V, (n,), generator=g).tolist() for n in SUFFIX_LENS]
    labels = [[5, 6, 7, 8, 9]] * 24
    H = model.config.hidden_size

    def ev(prefix_cache: bool, bs: int):
        return PopulationEvaluator(model, seqs, labels, cfg=PopulationConfig(tokens=a.tokens, batch_size=bs, prefix_cache=prefix_cache))

    batched, nocache, per_cand = ev(True, a.batch_size), ev(False, a.batch_size), ev(True, 24)
    per_prompt = ev(False, 1)
    rows = []
    info = {"device": torch.cuda.get_device_name() if cuda else "cpu", "dtype": str(dtype), "torch": torch.__version__,
            "model": "Qwen2-0.5B shape, random weights" if not a.small else "tiny Qwen2", "tokens": a.tokens,
            "prefix_len": PREFIX_LEN, "mean_suffix_len": sum(SUFFIX_LENS) / 24, "batch_rows": a.batch_size}
    emb = model.get_input_embeddings().weight
    for P in [int(p) for p in a.pops.split(",")]:
        X = emb[torch.randint(10, V, (P * a.tokens,), generator=g).to(emb.device)].reshape(P, a.tokens, H).float()
        t_b = timed(lambda: batched.label_logprobs(X), a.repeats, sync)
        t_n = timed(lambda: nocache.label_logprobs(X), a.repeats, sync)
        t_c = timed(lambda: [per_cand.label_logprobs(X[i : i + 1]) for i in range(P)], 1 if P > 32 else a.repeats, sync)
        k = min(P, a.per_prompt_candidates)
        t_p = timed(lambda: per_prompt.label_logprobs(X[:k]), 1, sync) * P / k
        ref = torch.stack([per_cand.label_logprobs(X[i : i + 1])[0] for i in range(min(P, 4))])
        diff = float((batched.label_logprobs(X)[: len(ref)] - ref).abs().max())
        row = {"P": P, "batched_cand_per_s": P / t_b, "nocache_cand_per_s": P / t_n, "per_candidate_cand_per_s": P / t_c,
               "per_prompt_cand_per_s": P / t_p, "speedup_vs_per_candidate": t_c / t_b, "speedup_vs_per_prompt": t_p / t_b,
               "prefix_cache_gain": t_n / t_b, "max_abs_logprob_diff_vs_per_candidate": diff}
        rows.append(row)
        print(json.dumps(row), flush=True)
    if cuda:
        info["max_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    print("\n" + json.dumps(info))
    print("\n| P | batched cand/s | no prefix cache | one candidate at a time | one prompt at a time | speed-up vs per-candidate | vs per-prompt | max |Δ logp| |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['P']} | {r['batched_cand_per_s']:.1f} | {r['nocache_cand_per_s']:.1f} | {r['per_candidate_cand_per_s']:.1f} | "
              f"{r['per_prompt_cand_per_s']:.2f} | {r['speedup_vs_per_candidate']:.1f}x | {r['speedup_vs_per_prompt']:.1f}x | "
              f"{r['max_abs_logprob_diff_vs_per_candidate']:.3g} |")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"info": info, "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
