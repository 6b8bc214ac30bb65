#!/usr/bin/env python
"""Speed of the MoE-LoRA layer (CuMA: E=8, top-2, r=8, router on hidden+profile) against peft LoRA
r=16 (the same active rank per token) on the q/v projections, with random weights in real shapes.

Measures, per variant: a training step (forward + backward, batch x seq tokens, labels = inputs,
loss + router aux loss), prefill latency (one forward over batch x seq with a KV cache, last-token
logits only) and decode throughput with ``generate()`` at batch 1 and 32 (greedy, fixed length;
decode time = time(N new tokens) - time(1 new token)). CUDA events / synchronize, warm-ups, medians.
Also counts the aten operators of one decode-step forward (device independent: at small batch the
decode step is bound by kernel launches).

Variants:
  lora        peft LoRA r=16, alpha 32 (peft's default: fp32 adapter weights, input cast to fp32)
  lora-bf16   the same with adapter weights in bf16 (autocast_adapter_dtype=False)
  ours        pluralign MoE-LoRA, fp32 master weights cast to bf16 when used (adapter_dtype=fp32)
  ours-bf16   pluralign MoE-LoRA, weights stored in bf16 (adapter_dtype=model)
  per-proj    batched experts (einsum) but a 2-layer router per projection on concat [hidden ; profile]
  naive       router per projection on [hidden ; profile] + a Python loop over experts with a host
              sync per expert (mask.any(), nonzero, index_put), as in the paper's code

Examples:
  python bench/moe_lora_speed.py --device cpu --shape tiny             # smoke check, seconds
  python bench/moe_lora_speed.py --shape qwen2-0.5b,llama3-8b          # GPU, bf16
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {
    "tiny": dict(arch="qwen2", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=1000),
    "qwen2-0.5b": dict(arch="qwen2", hidden_size=896, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                       intermediate_size=4864, vocab_size=151936),
    "llama3-8b": dict(arch="llama", hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
                      intermediate_size=14336, vocab_size=128256),
}
VARIANTS = ("lora", "lora-bf16", "ours", "ours-bf16", "per-proj", "naive")
PROFILE_DIM = 384


# ----------------------------------------------------------------------------- model
def build_backbone(shape: str, layers: int | None, device: str, dtype: torch.dtype, vocab: int | None = None):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    s = dict(SHAPES[shape])
    arch = s.pop("arch")
    if layers:
        s["num_hidden_layers"] = layers
    if vocab:
        s["vocab_size"] = vocab
    common = dict(max_position_embeddings=4096, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False)
    cfg = (Qwen2Config if arch == "qwen2" else LlamaConfig)(**s, **common)
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(0)
    prev = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build straight in bf16 (an 8B model in fp32 would need 32 GB)
    try:
        with torch.device(device):
            model = (Qwen2ForCausalLM if arch == "qwen2" else LlamaForCausalLM)(cfg)
    finally:
        torch.set_default_dtype(prev)
    model.to(dtype)
    for p in model.parameters():
        p.requires_grad_(False)
    return model


# ----------------------------------------------------------------------------- reference (slow) layers
_PROFILE: list = [None]  # the bench-only baselines read the profile from here (set by their wrapper)


class PerProjectionMoELoRA(nn.Module):
    """Baselines: a 2-layer router on concat [x ; d] inside every projection, then either batched
    experts (einsum) or a per-expert Python loop with host syncs (``naive``)."""

    def __init__(self, base: nn.Linear, E=8, r=8, k=2, alpha=16.0, dropout=0.05, naive=False):
        super().__init__()
        self.base, self.E, self.r, self.k, self.s, self.naive = base, E, r, k, alpha / r, naive
        d_in, d_out = base.in_features, base.out_features
        dev, dt = base.weight.device, torch.float32
        self.router = nn.Sequential(nn.Linear(d_in + PROFILE_DIM, 256), nn.GELU(), nn.Linear(256, E)).to(dev, dt)
        self.A = nn.Parameter(torch.randn(E, d_in, r, device=dev, dtype=dt) / d_in**0.5)
        self.B = nn.Parameter(torch.zeros(E, r, d_out, device=dev, dtype=dt))
        self.drop = nn.Dropout(dropout)

    def forward(self, x):
        out = self.base(x)
        dt = x.dtype
        d = _PROFILE[0]
        if d.shape[0] != x.shape[0]:
            d = d.repeat_interleave(x.shape[0] // d.shape[0], 0)
        z = torch.cat([x, d.to(dt)[:, None, :].expand(*x.shape[:2], d.shape[-1])], -1)  # per token
        logits = F.linear(F.gelu(F.linear(z, self.router[0].weight.to(dt), self.router[0].bias.to(dt))),
                          self.router[2].weight.to(dt), self.router[2].bias.to(dt))
        val, idx = logits.topk(self.k, -1)
        w = val.softmax(-1)
        xd = self.drop(x)
        A, B = self.A.to(dt), self.B.to(dt)
        if not self.naive:
            g = torch.zeros_like(logits).scatter(-1, idx, w)
            xa = torch.einsum("btd,edr->bter", xd, A) * g.unsqueeze(-1)
            return out + torch.einsum("bter,ero->bto", xa, B) * self.s
        out = out.clone()
        flat_x, flat_out = xd.reshape(-1, x.shape[-1]), out.view(-1, out.shape[-1])
        fidx, fw = idx.reshape(-1, self.k), w.reshape(-1, self.k)
        for e in range(self.E):
            hit = fidx == e
            if not hit.any():  # host sync, as in the reference implementation
                continue
            rows, slot = hit.nonzero(as_tuple=True)
            y = (flat_x[rows] @ A[e]) @ B[e] * (fw[rows, slot] * self.s).unsqueeze(-1)
            flat_out.index_add_(0, rows, y)
        return out


class ProfileWrapper(nn.Module):
    """Bench-only wrapper of the slow baselines: takes profile_embeds like the real adapted model."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, profile_embeds=None, **kw):
        _PROFILE[0] = profile_embeds
        try:
            out = self.model(**kw)
        finally:
            _PROFILE[0] = None
        out.aux_loss = torch.zeros((), device=out.logits.device)
        return out

    @torch.no_grad()
    def generate(self, profile_embeds=None, **kw):
        _PROFILE[0] = profile_embeds
        try:
            return self.model.generate(**kw)
        finally:
            _PROFILE[0] = None


def apply_variant(model, variant: str):
    """(wrapped model, undo function)."""
    if variant in ("lora", "lora-bf16"):
        from peft import LoraConfig, get_peft_model

        pm = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05, target_modules=["q_proj", "v_proj"],
                                              task_type="CAUSAL_LM"), autocast_adapter_dtype=(variant == "lora"))
        return ProfileWrapper(pm), lambda: pm.unload()
    if variant in ("ours", "ours-bf16"):
        from pluralign.adapters import adapter_config, build_adapted_model
        from pluralign.adapters.moe_lora import uninstall_moe_lora

        cfg = adapter_config("cuma", n_experts=8, top_k=2, r=8, alpha=16, dropout=0.05, profile_dim=PROFILE_DIM,
                             adapter_dtype="fp32" if variant == "ours" else "model")
        am = build_adapted_model(model, "cuma", cfg)
        return am, lambda: uninstall_moe_lora(model)
    if variant in ("per-proj", "naive"):
        swapped = []
        for name, mod in list(model.named_modules()):
            if isinstance(mod, nn.Linear) and name.split(".")[-1] in ("q_proj", "v_proj"):
                parent_name, _, leaf = name.rpartition(".")
                parent = model.get_submodule(parent_name)
                setattr(parent, leaf, PerProjectionMoELoRA(mod, naive=(variant == "naive")))
                swapped.append((parent, leaf, mod))

        def undo():
            for parent, leaf, mod in swapped:
                setattr(parent, leaf, mod)
            return model

        return ProfileWrapper(model), undo
    raise SystemExit(f"unknown variant {variant}")


def randomize_adapters(m) -> None:
    """B starts at zero; give every adapter weight values so no path is trivially skipped."""
    with torch.no_grad():
        for n, p in m.named_parameters():
            if p.requires_grad and ("lora_B" in n or n.endswith(".B")):
                p.normal_(0, 0.01)


# ----------------------------------------------------------------------------- timing
class Timer:
    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def __call__(self, fn, warmup: int, iters: int) -> float:
        """Median milliseconds of ``fn()``."""
        for _ in range(warmup):
            fn()
        times = []
        for _ in range(iters):
            if self.cuda:
                torch.cuda.synchronize()
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                torch.cuda.synchronize()
                times.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)


def count_ops(fn) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        n = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.n += 1
            return func(*args, **(kwargs or {}))

    with Count():
        fn()
    return Count.n


def bench_variant(model, variant, a, timer, device, dtype) -> dict:
    m, undo = apply_variant(model, variant)
    randomize_adapters(m)
    V = model.config.vocab_size
    g = torch.Generator(device="cpu").manual_seed(0)
    ids = torch.randint(3, V, (a.batch, a.seq), generator=g).to(device)
    prof = torch.randn(a.batch, PROFILE_DIM, generator=g).to(device, dtype)
    slow = variant == "naive"
    res = {"variant": variant}
    trainable = [p for p in m.parameters() if p.requires_grad]
    res["trainable_params"] = sum(p.numel() for p in trainable)

    # training step
    m.train()

    def step():
        out = m(input_ids=ids, labels=ids, profile_embeds=prof, use_cache=False)
        (out.loss + out.aux_loss).backward()
        for p in trainable:
            p.grad = None

    m.train()
    small = ids[:1, :8]

    def small_step():
        out = m(input_ids=small, labels=small, profile_embeds=prof[:1], use_cache=False)
        (out.loss + out.aux_loss).backward()
        for p in trainable:
            p.grad = None

    res["train_step_ops"] = count_ops(small_step)
    if a.count_only:
        m.eval()
        if hasattr(m, "cast_adapters"):
            m.cast_adapters(dtype)
        with torch.no_grad():
            res["decode_step_ops"] = count_ops(lambda: m(input_ids=ids[:1, :1], profile_embeds=prof[:1], use_cache=False, logits_to_keep=1))
        undo()
        for p in model.parameters():
            p.requires_grad_(False)
            p.grad = None
        return res
    res["train_ms"] = timer(step, 1 if slow else a.warmup, max(2, a.iters // 3) if slow else a.iters)
    if device.startswith("cuda"):
        res["train_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
        torch.cuda.reset_peak_memory_stats()

    # inference (ours: adapter weights in the backbone dtype, as load_adapter_for_eval does)
    m.eval()
    if hasattr(m, "cast_adapters"):
        m.cast_adapters(dtype)
    with torch.no_grad():
        res["prefill_ms"] = timer(
            lambda: m(input_ids=ids, profile_embeds=prof, use_cache=True, logits_to_keep=1),
            1 if slow else a.warmup, max(2, a.iters // 3) if slow else a.iters,
        )
        one = ids[:1, :1]
        res["decode_step_ops"] = count_ops(lambda: m(input_ids=one, profile_embeds=prof[:1], use_cache=False, logits_to_keep=1))
        for bs in a.decode_batches:
            prompt = torch.randint(3, V, (bs, a.prompt_len), generator=g).to(device)
            att = torch.ones_like(prompt)
            pe = torch.randn(bs, PROFILE_DIM, generator=g).to(device, dtype)

            def gen(n):
                return m.generate(input_ids=prompt, attention_mask=att, profile_embeds=pe, max_new_tokens=n, min_new_tokens=n,
                                  do_sample=False, pad_token_id=0, eos_token_id=None)

            reps = 1 if slow else a.decode_reps
            t1 = timer(lambda: gen(1), 1, reps)
            tn = timer(lambda: gen(a.decode_tokens), 1, reps)
            res[f"decode_tok_s_b{bs}"] = bs * (a.decode_tokens - 1) / max(tn - t1, 1e-6) * 1e3
    del m
    undo()
    for p in model.parameters():
        p.requires_grad_(False)
        p.grad = None
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
    return res


# ----------------------------------------------------------------------------- main
def table(shape: str, rows: list[dict], decode_batches) -> str:
    base = next((r for r in rows if r["variant"] == "lora"), rows[0])
    cols = ["train_ms", "prefill_ms"] + [f"decode_tok_s_b{b}" for b in decode_batches]
    head = ["variant", "train ms", "x LoRA", "prefill ms", "x LoRA"] + sum(
        ([f"decode tok/s b{b}", "x LoRA"] for b in decode_batches), []) + ["ops/train step", "ops/decode step", "trainable"]
    lines = [f"### {shape}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["variant"]]
        for c in cols:
            cells += [f"{r[c]:.1f}", f"{r[c] / base[c]:.2f}"]
        cells += [f"{r['train_step_ops']} ({r['train_step_ops'] / base['train_step_ops']:.2f})",
                  f"{r['decode_step_ops']} ({r['decode_step_ops'] / base['decode_step_ops']:.2f})", f"{r['trainable_params'] / 1e6:.2f}M"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def count_table(shape: str, rows: list[dict]) -> str:
    base = next((r for r in rows if r["variant"] == "lora"), rows[0])
    lines = [f"### {shape}: aten operators per call", "", "| variant | train step (fwd+bwd, 8 tokens) | x LoRA | decode step (1 token) | x LoRA |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['variant']} | {r['train_step_ops']} | {r['train_step_ops'] / base['train_step_ops']:.2f} | "
                     f"{r['decode_step_ops']} | {r['decode_step_ops'] / base['decode_step_ops']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--shape", default="qwen2-0.5b,llama3-8b", help=f"comma-separated: {', '.join(SHAPES)}")
    ap.add_argument("--layers", default="", help="override layer counts per shape, e.g. llama3-8b=16")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--decode-batches", default="1,32")
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--decode-reps", type=int, default=3)
    ap.add_argument("--prompt-len", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=None, help="override the vocabulary size (CPU runs: the LM head would dominate)")
    ap.add_argument("--dtype", default=None, help="bf16 on CUDA, fp32 on CPU by default")
    ap.add_argument("--count-only", action="store_true", help="only count aten ops of a train step (8 tokens) and a decode step")
    ap.add_argument("--json", default=None, help="also write the results here")
    a = ap.parse_args(argv)
    if a.device == "cpu":
        torch.set_num_threads(1)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[a.dtype or ("bf16" if a.device.startswith("cuda") else "fp32")]
    a.decode_batches = [int(x) for x in a.decode_batches.split(",") if x]
    overrides = dict(kv.split("=") for kv in a.layers.split(",") if kv)
    import transformers

    transformers.logging.set_verbosity_error()
    info = {"device": torch.cuda.get_device_name() if a.device.startswith("cuda") else "cpu", "torch": torch.__version__,
            "transformers": transformers.__version__, "dtype": str(dtype), "batch": a.batch, "seq": a.seq}
    try:
        import peft

        info["peft"] = peft.__version__
    except ImportError:
        pass
    print(json.dumps(info), flush=True)
    timer = Timer(a.device)
    out, tables = {"info": info, "results": {}}, []
    for shape in a.shape.split(","):
        layers = int(overrides[shape]) if shape in overrides else None
        t0 = time.time()
        model = build_backbone(shape, layers, a.device, dtype, a.vocab)
        print(f"# {shape}: {model.config.num_hidden_layers} layers, built in {time.time() - t0:.1f}s", flush=True)
        rows = []
        for v in a.variants.split(","):
            t0 = time.time()
            try:
                r = bench_variant(model, v, a, timer, a.device, dtype)
            except torch.OutOfMemoryError as e:
                print(f"{shape} {v}: out of memory ({str(e).splitlines()[0]})", flush=True)
                gc.collect()
                torch.cuda.empty_cache()
                continue
            r["wall_s"] = round(time.time() - t0, 1)
            rows.append(r)
            print(json.dumps({"shape": shape, **r}), flush=True)
        out["results"][f"{shape} ({model.config.num_hidden_layers} layers)"] = rows
        title = f"{shape}, {model.config.num_hidden_layers} layers, vocab {model.config.vocab_size}"
        tables.append(count_table(title, rows) if a.count_only else table(title, rows, a.decode_batches))
        del model
        gc.collect()
        if a.device.startswith("cuda"):
            torch.cuda.empty_cache()
    print()
    print("\n\n".join(tables))
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
