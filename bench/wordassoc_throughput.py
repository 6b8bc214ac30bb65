"""Cues per second of word-association generation: batched (left-padded) vs one cue at a time.

Uses :func:`pluralign.wordassoc.generate.generate_texts` (the evaluation's generation path) on a
model in the shape of a real one, with random weights built from a config (no weights needed), and
a real tokenizer (any folder with tokenizer files: e.g. the SmolLM2 cache). Every completion is
forced to ``--new-tokens`` tokens so that batched and sequential runs do the same work.

    PYTHONPATH=src python bench/wordassoc_throughput.py --tokenizer .carry/smollm2-tok --shape qwen2-0.5b \
        --cues 256 --batch-sizes 1,16,64,256 --seq-cues 32 --out bench/results/wordassoc.json

Cue words are tokenizer vocabulary entries (alphabetic, 4+ letters): throughput does not depend on
which words are asked, and no SWOW data (CC BY-NC-ND) leaves the project machine.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

SHAPES = {
    # Qwen2-0.5B / Qwen2.5-0.5B(-Coder)-Instruct
    "qwen2-0.5b": dict(arch="qwen2", hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936, max_position_embeddings=32768, tie_word_embeddings=True),
    # SmolLM2-135M
    "smollm2-135m": dict(arch="llama", hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, max_position_embeddings=8192, tie_word_embeddings=True),
}


def build_model(shape: str, dtype: torch.dtype, device: str):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    kw = dict(SHAPES[shape])
    arch = kw.pop("arch")
    cfg = (Qwen2Config if arch == "qwen2" else LlamaConfig)(**kw)
    torch.manual_seed(0)
    with torch.device(device):
        model = (Qwen2ForCausalLM if arch == "qwen2" else LlamaForCausalLM)(cfg)
    return model.to(dtype).eval()


def cue_words(tok, n: int) -> list[str]:
    words = []
    for t in sorted(tok.get_vocab()):
        w = t.lstrip("Ġ▁")
        if len(w) >= 4 and w.isascii() and w.isalpha() and w.islower() and w not in words:
            words.append(w)
        if len(words) >= n:
            break
    return words


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", required=True, help="Folder with tokenizer files (and a chat template).")
    ap.add_argument("--shape", default="qwen2-0.5b", choices=sorted(SHAPES), help="Model shape (random weights).")
    ap.add_argument("--cues", type=int, default=256, help="Cues for the batched runs.")
    ap.add_argument("--seq-cues", type=int, default=32, help="Cues for the one-at-a-time run (extrapolated rate).")
    ap.add_argument("--batch-sizes", default="1,16,64,256", help="Comma-separated batch sizes (1 = one at a time).")
    ap.add_argument("--new-tokens", type=int, default=24, help="New tokens per completion (forced).")
    ap.add_argument("--num-samples", type=int, default=1, help="Completions per cue (1 = greedy).")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp32", "fp16"])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads.")
    ap.add_argument("--out", default=None, help="Write the results JSON here.")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)

    from transformers import AutoTokenizer

    from pluralign.models.chat import build_chat_prompt
    from pluralign.models.loading import prepare_tokenizer
    from pluralign.wordassoc.generate import GenConfig, generate_texts
    from pluralign.wordassoc.tasks import generation_messages

    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[a.dtype]
    tok = AutoTokenizer.from_pretrained(a.tokenizer)
    prepare_tokenizer(tok)
    model = build_model(a.shape, dtype, a.device)
    n_params = sum(p.numel() for p in model.parameters())
    cues = cue_words(tok, a.cues)
    prompts = [build_chat_prompt(tok, generation_messages(c, 3)) for c in cues]
    prompt_tokens = sum(len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts) / len(prompts)

    def run(bs: int, ps: list[str]) -> float:
        cfg = GenConfig(batch_size=bs, max_new_tokens=a.new_tokens, min_new_tokens=a.new_tokens, num_samples=a.num_samples,
                        temperature=1.0, seed=0)
        generate_texts(model, tok, ps[: max(1, min(bs, len(ps)))], cfg, progress=False)  # warm-up
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate_texts(model, tok, ps, cfg, progress=False)
        if a.device.startswith("cuda"):
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    rows = []
    for bs in [int(b) for b in a.batch_sizes.split(",")]:
        ps = prompts[: a.seq_cues] if bs == 1 else prompts
        dt = run(bs, ps)
        rows.append({"batch_size": bs, "cues": len(ps), "seconds": dt, "cues_per_second": len(ps) / dt,
                     "new_tokens_per_second": len(ps) * a.num_samples * a.new_tokens / dt})
        print(f"batch {bs:4d}: {len(ps)} cues in {dt:.2f} s = {len(ps) / dt:.1f} cues/s", flush=True)
    base = next((r["cues_per_second"] for r in rows if r["batch_size"] == 1), None)
    for r in rows:
        r["speedup_vs_1"] = r["cues_per_second"] / base if base else None
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "device": torch.cuda.get_device_name(0) if a.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "shape": a.shape, "params": n_params, "dtype": a.dtype, "new_tokens": a.new_tokens,
        "num_samples": a.num_samples, "mean_prompt_tokens": prompt_tokens, "rows": rows,
    }
    import transformers

    info["transformers"] = transformers.__version__
    print("\n| batch | cues | seconds | cues/s | new tokens/s | speed-up vs 1 |\n|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch_size']} | {r['cues']} | {r['seconds']:.2f} | {r['cues_per_second']:.1f} | "
              f"{r['new_tokens_per_second']:.0f} | {r['speedup_vs_1']:.1f}x |")
    print(json.dumps({k: v for k, v in info.items() if k != "rows"}))
    if a.out:
        from pathlib import Path

        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(info, indent=2) + "\n")


if __name__ == "__main__":
    main()
