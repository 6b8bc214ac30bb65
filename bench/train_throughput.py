"""Training throughput: today's path (adapters on every layer) vs the cached-trunk fast path.

Compared on the same backbone, rows and settings (distributional soft-label SFT of WVS country
shares, peft LoRA q/v, batch 8, AdamW), all through pluralign's own ``build_trainer`` (the
``transformers.Trainer`` that ``pluralign train`` runs):

* ``all-layers``   : LoRA on every decoder layer (today's default path);
* ``top-N``        : LoRA on the top N layers only, full forward every step;
* ``top-N-cached`` : LoRA on the top N layers, the frozen trunk below run once per row and cached
                     (``--top-layers N``, the default ``--cache-trunk``); its one-off cost is shown
                     separately and amortised over 3 epochs of the rows;
* ``bare-cached``  : the same forward + backward + AdamW step in a plain loop without the Trainer
                     (how much the Trainer itself costs per step).

Then wall time to a training-EMD target: each path trains on the same rows until the EMD of its
predictions on those rows falls below the target (default: the EMD of the rows' mean distribution,
what a mean-collapsed model gets), evaluated every ``--eval-every`` steps (evaluation time is not
counted).

    PYTHONPATH=src python bench/train_throughput.py                       # SmolLM2 on the CPU
    PYTHONPATH=src python bench/train_throughput.py --shape qwen2-0.5b --device cuda --dtype bf16   # random weights
    PYTHONPATH=src python bench/train_throughput.py --small               # tiny random model (CI dry run)
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SHAPES = {
    "qwen2-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                       num_key_value_heads=2, vocab_size=151936),
    "llama-3-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=128256),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=600),
}


def load(args):
    from pluralign.models import load_backbone

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    if args.shape:
        from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

        torch.manual_seed(0)
        cfg = Qwen2Config(max_position_embeddings=2048, **SHAPES[args.shape])
        with torch.device(args.device):
            model = Qwen2ForCausalLM(cfg).to(dtype)
        tok = _tokenizer_for(args)
        return model, tok
    return load_backbone(args.model, dtype=dtype, device=args.device)


def _tokenizer_for(args):
    """``--tokenizer`` (a folder), else SmolLM2's tokenizer when available (the prompts' real
    lengths), else the tests' tiny one."""
    if args.tokenizer:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(args.tokenizer)
    try:
        from pluralign.models import load_backbone

        _, tok = load_backbone("smollm2-135m")
        return tok
    except Exception:  # noqa: BLE001 - a bench fallback
        import sys

        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from conftest import _tokenizer

        return _tokenizer()


def make_rows(tok, n_rows: int, vocab: int):
    from pluralign.data import load_dataset
    from pluralign.training.data import encode_dataset, subsample  # noqa: F401

    ds = load_dataset("wvs-shares")
    # a few items x every country: the rows' mean distribution is a real (mean-collapse) target
    n_items = max(1, n_rows // len(ds.groups()))
    items = sorted(ds.items)[:: max(1, len(ds.items) // n_items)][:n_items]
    rows = subsample(encode_dataset(tok, ds.filter(questions=items)), n_rows, 0)
    for r in rows:  # a random-weight shape may have a smaller vocabulary than the tokenizer
        if max(r.input_ids) >= vocab:
            r.input_ids = [i % vocab for i in r.input_ids]
            r.option_ids = [i % vocab for i in r.option_ids]
    return rows


def training_emd(model, rows, collator, device) -> float:
    from pluralign.evaluation.metrics import emd
    from pluralign.training.losses import answer_logits, option_logprobs

    model.eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(rows), 16):
            chunk = rows[s : s + 16]
            b = {k: (v.to(device) if torch.is_tensor(v) else v) for k, v in collator(chunk).items()}
            lg, _ = answer_logits(model, b)
            p = option_logprobs(lg, b["option_ids"], b["option_mask"], "options").exp().float().cpu().numpy()
            for r, q in zip(chunk, p):
                out.append(emd(q[: len(r.target)], np.asarray(r.target)))
    model.train()
    return float(np.mean(out))


def mean_collapse_emd(rows) -> float:
    from pluralign.evaluation.metrics import emd

    by = {}
    for r in rows:
        by.setdefault(r.item_id, []).append(np.asarray(r.target))
    return float(np.mean([emd(np.mean(by[r.item_id], 0), np.asarray(r.target)) for r in rows]))


def build(base, tok, path: str, top: int, rows, args, out: Path, steps: int):
    from pluralign.adapters import adapter_config, build_adapted_model
    from pluralign.training import TrainConfig
    from pluralign.training.run import build_trainer

    n = base.config.num_hidden_layers
    layers = None if path == "all-layers" else list(range(n - top, n))
    torch.manual_seed(0)
    model = build_adapted_model(copy.deepcopy(base), "lora", adapter_config("lora", layers_to_transform=layers))
    start = None
    trunk_s = 0.0
    rows = [copy.copy(r) for r in rows]
    if path.endswith("cached"):
        from pluralign.training.fastpath import attach_trunk

        start = model.first_adapted_layer()
        trunk_s = attach_trunk(model, rows, start=start, batch_size=16, progress=False, device=args.device)["seconds"]
    cfg = TrainConfig(method="lora", task="distributional", steps=steps, batch_size=args.batch_size, lr=args.lr,
                      warmup_ratio=0.0, scheduler="constant", save_steps=0, logging_steps=10**6, progress=False,
                      out=str(out), device=args.device, dtype=args.dtype).validate()
    bf16 = args.dtype == "bf16"
    trainer = build_trainer(model, tok, rows, cfg, out, device=args.device, bf16=bf16, start_layer=start)
    return trainer, model, rows, trunk_s


def time_steps(trainer, steps: int) -> float:
    """Seconds per optimizer step of ``trainer`` (the first steps are warm-up and not counted)."""
    from transformers import TrainerCallback

    marks = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            marks.append(time.perf_counter())

    trainer.add_callback(Clock())
    trainer.train()
    d = np.diff(marks[1:]) if len(marks) > 2 else np.diff(marks)
    return float(statistics.median(d))


def bare_step_seconds(model, rows, collator, args, steps: int) -> float:
    from pluralign.training.losses import answer_logits, option_logprobs, soft_cross_entropy

    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=args.lr)
    model.train()
    ts = []
    for i in range(steps):
        chunk = [rows[(i * args.batch_size + j) % len(rows)] for j in range(args.batch_size)]
        b = {k: (v.to(args.device) if torch.is_tensor(v) else v) for k, v in collator(chunk).items()}
        t0 = time.perf_counter()
        lg, _ = answer_logits(model, b)
        loss = soft_cross_entropy(option_logprobs(lg, b["option_ids"], b["option_mask"], "vocab"), b["target_probs"])
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        ts.append(time.perf_counter() - t0)
    return float(statistics.median(ts[1:] if len(ts) > 1 else ts))


def time_to_target(base, tok, path, top, rows, args, target: float) -> dict:
    with tempfile.TemporaryDirectory() as d:
        trainer, model, rws, trunk_s = build(base, tok, path, top, rows, args, Path(d), args.max_steps)
        from transformers import TrainerCallback

        state = {"train_s": 0.0, "t": None, "hit": None, "emd": None}
        collator = trainer.data_collator

        class Probe(TrainerCallback):
            def on_step_begin(self, a, s, c, **kw):
                state["t"] = time.perf_counter()

            def on_step_end(self, a, s, c, **kw):
                state["train_s"] += time.perf_counter() - state["t"]
                if s.global_step % args.eval_every == 0:
                    e = training_emd(model, rws, collator, args.device)
                    state["emd"] = e
                    if e <= target and state["hit"] is None:
                        state["hit"] = (s.global_step, state["train_s"] + trunk_s)
                        c.should_training_stop = True

        trainer.add_callback(Probe())
        trainer.train()
    return {"steps": state["hit"][0] if state["hit"] else None, "seconds": state["hit"][1] if state["hit"] else None,
            "last_emd": state["emd"], "trunk_s": trunk_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--shape", choices=sorted(SHAPES), default=None, help="random weights in a real shape instead of --model")
    ap.add_argument("--tokenizer", default=None, help="tokenizer folder for --shape (default: SmolLM2's if installed)")
    ap.add_argument("--small", action="store_true", help="tiny random model, few steps (CI dry run)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--top", type=int, default=8, help="adapted top layers of the fast path")
    ap.add_argument("--rows", type=int, default=64, help="training rows")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--steps", type=int, default=6, help="timed steps per path")
    ap.add_argument("--max-steps", type=int, default=80, help="step budget of the time-to-target runs")
    ap.add_argument("--eval-every", type=int, default=8)
    ap.add_argument("--no-target", action="store_true", help="skip the time-to-target runs")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", default=None, help="also write the table as JSON here")
    args = ap.parse_args()
    if args.small:
        args.shape, args.rows, args.steps, args.max_steps, args.eval_every, args.top = "tiny", 16, 3, 8, 4, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    base, tok = load(args)
    base.config.use_cache = False
    vocab = base.config.vocab_size
    rows = make_rows(tok, args.rows, vocab)
    ntok = statistics.mean(len(r.input_ids) for r in rows)
    res = []
    for path in ("all-layers", f"top-{args.top}", f"top-{args.top}-cached"):
        with tempfile.TemporaryDirectory() as d:
            trainer, model, rws, trunk_s = build(base, tok, "all-layers" if path == "all-layers" else path.replace(f"top-{args.top}", "top"),
                                                 args.top, rows, args, Path(d), args.steps)
            s = time_steps(trainer, args.steps)
            res.append({"path": path, "s_per_step": s, "rows_per_s": args.batch_size / s, "trunk_s": trunk_s})
            if path.endswith("cached"):
                b = bare_step_seconds(model, rws, trainer.data_collator, args, args.steps)
                res.append({"path": "bare-cached", "s_per_step": b, "rows_per_s": args.batch_size / b, "trunk_s": trunk_s})
    ref = res[0]["s_per_step"]
    epochs_rows = 3 * args.rows
    print(f"\nbackbone: {args.shape or args.model} ({args.dtype}, {args.device}, {torch.get_num_threads()} threads); "
          f"{args.rows} wvs-shares rows, mean {ntok:.0f} tokens, batch {args.batch_size}\n")
    print("| path | s / step | rows / s | speed-up vs all-layers | trunk cache (s, once) | 3 epochs of the rows (s) |")
    print("|---|---|---|---|---|---|")
    for r in res:
        total = r["trunk_s"] + epochs_rows / r["rows_per_s"]
        r["three_epochs_s"] = total
        print(f"| {r['path']} | {r['s_per_step']:.3f} | {r['rows_per_s']:.2f} | {ref / r['s_per_step']:.2f}x | "
              f"{r['trunk_s']:.1f} | {total:.0f} |")
    out = {"config": vars(args), "rows_mean_tokens": ntok, "throughput": res}
    if not args.no_target:
        target = mean_collapse_emd(rows)
        print(f"\ntime to training EMD <= {target:.4f} (the rows' mean distribution), eval every {args.eval_every} steps, "
              f"budget {args.max_steps} steps\n")
        print("| path | steps | seconds (incl. trunk cache) | EMD at stop |")
        print("|---|---|---|---|")
        tt = []
        for path in ("all-layers", "top-cached"):
            r = time_to_target(base, tok, path, args.top, rows, args, target)
            r["path"] = path
            tt.append(r)
            name = "all-layers" if path == "all-layers" else f"top-{args.top}-cached"
            print(f"| {name} | {r['steps'] or '> ' + str(args.max_steps)} | "
                  f"{'%.0f' % r['seconds'] if r['seconds'] else 'not reached'} | {r['last_emd']:.4f} |")
        out["time_to_target"] = {"target_emd": target, "runs": tt}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
