"""Scorer throughput: pluralign's OptionScorer vs lm-evaluation-harness multiple-choice log-likelihood.

Both score the same items (WVS-7 per-country answer-share questions rendered with pluralign's
``persona`` method and the model's chat template, so every country gets its own prompt) with the
same model object:

* **ours**: ``OptionScorer.next_token``: one forward pass per item, batched with left padding,
  last-position logits only (``logits_to_keep=1``), probabilities over the option labels;
* **lm-eval**: ``lm_eval.models.huggingface.HFLM.loglikelihood`` with one ``(prompt, label)``
  request per option, exactly as a multiple-choice task issues them (lm-eval groups requests that
  share a context, right-pads, and computes log-softmax over every position).

The predicted option (argmax) of both is compared item by item (``agreement``). Timings exclude
model loading and a warm-up batch; CUDA is synchronised before the clock stops. With ``--repeats``
the scorers run interleaved and the fastest pass of each counts.

Models:

* ``smollm2-135m``: the real SmolLM2-135M-Instruct (the CPU run);
* ``qwen2-0.5b-random``: a Qwen2-0.5B-shaped model (hidden 896, 24 layers, 14 heads, 2 KV heads,
  intermediate 4864, vocabulary 151936, tied embeddings) with random weights, built from a config
  (no download): the GPU run. Its tokenizer is ``--tokenizer`` (a saved folder, e.g. SmolLM2's
  49152-token tokenizer): every id it produces is < 151936, so the model keeps Qwen2's real
  vocabulary size and the full-vocabulary logits cost.

Examples::

    python bench/score_throughput.py --model smollm2-135m --device cpu --items 24 --threads 1 --repeats 2
    python bench/score_throughput.py --model qwen2-0.5b-random --tokenizer .carry/tok --device cuda \\
        --items 2048 --batch-size 64 --dtype bf16 --repeats 3

Prints a Markdown table (device, model, items, our items/s, lm-eval items/s, ratio, agreement) and
writes it with the raw numbers as JSON when ``--out`` is given.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without installing


@dataclass
class BenchConfig:
    model: str = field(default="smollm2-135m", metadata={"help": "smollm2-135m, qwen2-0.5b-random, or any name load_backbone takes."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer folder for qwen2-0.5b-random."})
    device: str = field(default="auto", metadata={"help": "cpu, cuda or auto."})
    dtype: str = field(default="auto", metadata={"help": "auto (fp32 on CPU, bf16 on CUDA), fp32, bf16."})
    items: int = field(default=48, metadata={"help": "Number of (country, question) items to score."})
    countries: str = field(default="USA,CHN,DEU,IND,NGA,BRA,RUS,MEX", metadata={"help": "Countries whose persona prompts are scored."})
    batch_size: int = field(default=8, metadata={"help": "Rows per forward pass, for both scorers."})
    threads: int = field(default=1, metadata={"help": "torch CPU threads."})
    repeats: int = field(default=1, metadata={"help": "Timed passes of each scorer, interleaved (ours, lm-eval, ours, ...); the fastest pass counts (robust to a shared, noisy machine)."})
    seed: int = field(default=0, metadata={"help": "Seed of the random-weight model and of the item sample."})
    skip_lmeval: bool = field(default=False, metadata={"help": "Only time our scorer."})
    out: str | None = field(default=None, metadata={"help": "Write the results JSON here."})


def parse_args(argv=None) -> BenchConfig:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name, f in BenchConfig.__dataclass_fields__.items():
        flag = "--" + name.replace("_", "-")
        if f.type == "bool":
            ap.add_argument(flag, action="store_true", help=f.metadata["help"])
        else:
            typ = int if f.type == "int" else str
            ap.add_argument(flag, type=typ, default=f.default, help=f.metadata["help"])
    return BenchConfig(**vars(ap.parse_args(argv)))


# ------------------------------------------------------------------------------------- model
def build_model(cfg: BenchConfig, device: str, dtype: torch.dtype):
    if cfg.model != "qwen2-0.5b-random":
        from pluralign.models import load_backbone

        return load_backbone(cfg.model, dtype=dtype, device=device)
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    from pluralign.models.loading import prepare_tokenizer

    if not cfg.tokenizer:
        print("error: --model qwen2-0.5b-random needs --tokenizer FOLDER (a saved tokenizer with a chat template)", file=sys.stderr)
        raise SystemExit(2)
    tok = AutoTokenizer.from_pretrained(cfg.tokenizer)
    prepare_tokenizer(tok)
    qcfg = Qwen2Config(
        vocab_size=151936, hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
        num_key_value_heads=2, max_position_embeddings=32768, rope_theta=1_000_000.0, rms_norm_eps=1e-6,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )
    assert len(tok) <= qcfg.vocab_size
    torch.manual_seed(cfg.seed)
    with torch.device(device):
        model = Qwen2ForCausalLM(qcfg)
    return model.to(dtype).eval(), tok


# ------------------------------------------------------------------------------------- items
def build_items(tok, cfg: BenchConfig):
    """Persona prompts of WVS country-share items; a deterministic sample of ``cfg.items``."""
    from pluralign.data import load_dataset
    from pluralign.evaluation.runner import EvalConfig, build_prompts

    ds = load_dataset("wvs-shares").filter(countries=cfg.countries.split(","))
    prompts, labels, _, _, _ = build_prompts(tok, ds, EvalConfig(method="persona"))
    rng = np.random.default_rng(cfg.seed)
    pick = sorted(rng.choice(len(prompts), size=min(cfg.items, len(prompts)), replace=False).tolist())
    return [prompts[i] for i in pick], [labels[i] for i in pick]


# ------------------------------------------------------------------------------------- scorers
def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def make_ours(model, tok, prompts, labels, cfg: BenchConfig, device: str):
    """Returns a timed pass: () -> (predictions, seconds, option log-probs)."""
    from pluralign.evaluation.scoring import OptionScorer

    sc = OptionScorer(model, tok, batch_size=cfg.batch_size)
    sc.next_token(prompts[: cfg.batch_size], labels[: cfg.batch_size])  # warm-up

    def run():
        _sync(device)
        t0 = time.perf_counter()
        scores = sc.next_token(prompts, labels)
        _sync(device)
        dt = time.perf_counter() - t0
        return [int(np.argmax(s.probs)) for s in scores], dt, [s.logprobs for s in scores]

    return run


def make_lmeval(model, tok, prompts, labels, cfg: BenchConfig, device: str):
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=cfg.batch_size, device=device)

    def requests(ps, ls):
        reqs, owner = [], []
        for i, (p, labs) in enumerate(zip(ps, ls)):
            sep = "" if p[-1].isspace() else " "
            for j, lab in enumerate(labs):  # one request per option, as a multiple_choice task does
                reqs.append(Instance(request_type="loglikelihood", doc={}, arguments=(p, sep + lab), idx=j))
                owner.append(i)
        return reqs, owner

    w, _ = requests(prompts[: cfg.batch_size], labels[: cfg.batch_size])
    lm.loglikelihood(w, disable_tqdm=True)  # warm-up

    def run():
        reqs, owner = requests(prompts, labels)  # fresh Instances: lm-eval keeps no cache between passes
        _sync(device)
        t0 = time.perf_counter()
        res = lm.loglikelihood(reqs, disable_tqdm=True)
        _sync(device)
        dt = time.perf_counter() - t0
        lls: list[list[float]] = [[] for _ in prompts]
        for (ll, _greedy), i in zip(res, owner):
            lls[i].append(ll)
        return [int(np.argmax(x)) for x in lls], dt, [np.asarray(x) for x in lls]

    return run


def main(argv=None) -> dict:
    cfg = parse_args(argv)
    from pluralign.models.loading import parse_dtype, pick_device

    torch.set_num_threads(cfg.threads)
    device = pick_device(cfg.device)
    dtype = parse_dtype(cfg.dtype, device)
    model, tok = build_model(cfg, device, dtype)
    prompts, labels = build_items(tok, cfg)
    n_tok = [len(tok(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    ours = make_ours(model, tok, prompts, labels, cfg, device)
    lmeval = None if cfg.skip_lmeval else make_lmeval(model, tok, prompts, labels, cfg, device)
    ours_times, lm_times = [], []
    for _ in range(max(1, cfg.repeats)):  # interleaved, so load on a shared machine hits both alike
        ours_pred, dt, ours_lp = ours()
        ours_times.append(dt)
        if lmeval is not None:
            lm_pred, dt, lm_lp = lmeval()
            lm_times.append(dt)
    ours_s = min(ours_times)
    row = {
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else f"CPU ({platform.processor() or platform.machine()}, {cfg.threads} thread(s))",
        "model": cfg.model,
        "dtype": str(dtype).replace("torch.", ""),
        "items": len(prompts),
        "options": int(sum(len(l) for l in labels)),
        "prompt_tokens_mean": float(np.mean(n_tok)),
        "batch_size": cfg.batch_size,
        "ours_s": ours_s,
        "ours_s_all": ours_times,
        "ours_items_per_s": len(prompts) / ours_s,
    }
    if lmeval is not None:
        lm_s = min(lm_times)
        agree = float(np.mean([a == b for a, b in zip(ours_pred, lm_pred)]))
        # lm-eval moves the prompt's trailing "\n" into the continuation, so its log-likelihoods
        # include log P("\n"), the same for every option: compare option log-prob *differences*
        diffs = [np.abs((a - a.mean()) - (b - b.mean())).max() for a, b in zip(ours_lp, lm_lp)]
        row.update(
            lmeval_s=lm_s,
            lmeval_s_all=lm_times,
            lmeval_items_per_s=len(prompts) / lm_s,
            ratio=lm_s / ours_s,
            agreement=agree,
            max_abs_centered_logprob_diff=float(np.max(diffs)),
        )
    row["config"] = asdict(cfg)
    print(table([row]))
    if cfg.out:
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.out).write_text(json.dumps(row, indent=2) + "\n")
    return row


def table(rows: list[dict]) -> str:
    head = "| device | model | dtype | items | batch | mean prompt tokens | ours items/s | lm-eval items/s | ratio | agreement |"
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lm = f"{r['lmeval_items_per_s']:.2f}" if "lmeval_items_per_s" in r else "-"
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else "-"
        agree = f"{100 * r['agreement']:.1f}%" if "agreement" in r else "-"
        lines.append(
            f"| {r['device']} | {r['model']} | {r['dtype']} | {r['items']} | {r['batch_size']} | {r['prompt_tokens_mean']:.0f} "
            f"| {r['ours_items_per_s']:.2f} | {lm} | {ratio} | {agree} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
