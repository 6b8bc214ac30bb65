"""Conditional GRPO: group-relative policy optimisation with the profile on the router, a stage
beside SFT and DPO (``pluralign train --stage grpo``), also ALIGN's RL stage
(:func:`pluralign.wordassoc.train.train_rl`).

**What this is, honestly.** An in-house, compact GRPO on the transformers ``Trainer`` (the same
base as the SFT and DPO stages: AdamW, schedule, gradient accumulation, atomic resumable
checkpoints of the trainable weights, logging), not TRL's ``GRPOTrainer``. TRL's trainer
(3,400 lines in TRL 1.16) builds its own generation, log-prob and reference-model paths and
forwards no per-sample extra argument to the model, so a profile-routed adapter (CuMA) would
generate and be scored without its profile; wrapping it would mean overriding most of it.
The objective is the one TRL implements (Shao et al. 2024, DeepSeekMath; TRL's loss options):

* per prompt, ``num_generations`` completions are sampled (``temperature``, ``top_p``,
  ``top_k``) from the current policy (:func:`pluralign.models.generation.generate_ids`, shared
  with ``generate-eval``); each sequence carries its own ``profile_embeds`` row, in
  ``generate`` (the adapter's routing context holds the profile for every decode step) and in the
  loss forward: the router sees each sample's profile both times;
* rewards: the weighted sum of the reward functions (:func:`resolve_reward`: ``blend-match`` /
  ``blend-weighted``, ``judge``, any ``module:function``; TRL's signature
  ``f(prompts, completions, completion_ids, **columns) -> list[float]``, ``None`` = not
  applicable);
* advantages: reward minus the group mean, divided by the group std + 1e-4 (``scale_rewards =
  group``; ``batch``: the batch std; ``none``: not divided);
* loss per token: ``-min(ρ A, clip(ρ, 1 - ε, 1 + ε_high) A) + β KL``, ``ρ = π / π_old``, KL the k3
  estimator ``exp(r - l) - (r - l) - 1`` to the reference (the policy at the start of the stage: its
  trainable weights are copied once and swapped in for the reference pass, no second model);
  ``num_iterations`` > 1 reuses each generation batch for that many optimizer steps (then
  ``π_old`` differs from ``π`` and the clip is active; with 1, ``ρ = 1`` and the clip is inert, as
  in TRL); aggregation ``loss_type``: ``grpo`` (mean over each sequence's tokens, then over
  sequences), ``dapo`` / ``bnpo`` (mean over all tokens of the micro-batch: TRL's default
  ``dapo`` normalises over the whole accumulation window and all processes, identical with one
  process and no accumulation), ``dr_grpo`` (sum / (sequences x max_completion_length)).
  ``mask_truncated_completions`` drops completions that hit the length limit from the loss.
* dropout is switched off for the stage (sampling and scoring see the same network); an MoE
  adapter's load-balancing loss is added as in SFT.

Not implemented (TRL has them): vLLM generation, importance sampling at sequence level, entropy
masking / bonus, tool calls, multi-process gathering of rewards across processes (rewards are
normalised within each process's groups, which hold whole groups: a group never spans
processes).

Logged per step (``log.jsonl``): ``reward``, ``reward_std``, ``rewards/<name>``,
``completions/mean_length``, ``completions/empty_frac`` (empty completions are kept: the reward
decides; they are counted), ``completions/clipped_frac`` (hit the length limit),
``frac_reward_zero_std``, ``clip_ratio``, ``kl`` (``beta > 0``), ``aux_loss``.
"""

from __future__ import annotations

import contextlib
import importlib
import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch

from pluralign.errors import PluralignError
from pluralign.registry import Registry
from pluralign.models.generation import decode, generate_ids
from pluralign.training.config import GRPOSettings  # noqa: F401  (declared with TrainConfig; re-exported)
from pluralign.training.trainer import ConditionalTrainer


@dataclass
class PromptRow:
    """One prompt of the GRPO stage. ``prompt`` is what reward functions receive as ``prompts``
    (text, or chat messages); ``columns`` are passed to them as keyword lists; ``profile`` (or
    None for unrouted runs) picks the ``profile_embeds`` row; ``key`` caches per-prompt data."""

    prompt_ids: list[int]
    prompt: Any
    key: str
    profile: Any = None
    columns: dict = field(default_factory=dict)


class PromptCollator:
    def __call__(self, rows):
        return {"rows": list(rows)}


# --------------------------------------------------------------------------- rewards
def _text(c) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list) and c and isinstance(c[-1], dict):
        return str(c[-1].get("content", ""))
    return str(c)


def blend_match_reward(prompts, completions, answers=None, answer_counts=None, **_) -> list[float | None]:
    """1 when the completion matches one of the profile's human answers (BLEnD's soft exact
    match, :func:`pluralign.data.loaders.blend.blend_match`), else 0; None without answers."""
    return _blend(completions, answers, answer_counts, weighted=False)


def blend_weighted_reward(prompts, completions, answers=None, answer_counts=None, **_) -> list[float | None]:
    """BLEnD's weighted score: count of the matched answer group / count of the top group."""
    return _blend(completions, answers, answer_counts, weighted=True)


def _blend(completions, answers, counts, *, weighted: bool):
    from pluralign.data.loaders.blend import blend_match

    if answers is None:
        raise PluralignError("the blend-match reward needs human answers (BLEnD data: --data blend)", field="reward")
    counts = counts or [None] * len(completions)
    out: list[float | None] = []
    for c, a, n in zip(completions, answers, counts):
        if not a:
            out.append(None)
            continue
        b, w = blend_match(_text(c), a, n)
        out.append(w if weighted else b)
    return out


blend_match_reward.__name__ = "blend-match"
blend_weighted_reward.__name__ = "blend-weighted"
#: the built-in GRPO rewards by name (``judge`` and ``module:function`` are resolved by :func:`resolve_reward`)
REWARDS: Registry[Callable] = Registry("reward", field="reward")
REWARDS.add("blend-match", blend_match_reward)
REWARDS.add("blend-weighted", blend_weighted_reward)


class JudgeReward:
    """A judge's pairwise preference of the completion over the reference policy's (greedy)
    answer to the same prompt: P(completion better), averaged over both presentation orders, in
    [0, 1] (``judge`` is a :class:`pluralign.evaluation.generate.Judge`). Off-format verdicts
    count as 0.5 (no preference) and are counted in ``off_format``."""

    needs_reference_answers = True
    __name__ = "judge"

    def __init__(self, judge):
        self.judge = judge
        self.off_format = 0

    def __call__(self, prompts, completions, reference_completions=None, profiles=None, **_):
        if reference_completions is None:
            raise PluralignError("the judge reward needs the reference answers (run it inside the GRPO trainer)", field="reward")
        items = [(_text(p) if not isinstance(p, str) else p, _text(c), r, prof)
                 for p, c, r, prof in zip(prompts, completions, reference_completions, profiles or [None] * len(completions))]
        verdicts = self.judge.compare_both_orders(items)
        out = []
        for v in verdicts:
            if v is None:
                self.off_format += 1
                out.append(0.5)
            else:
                out.append(float(v))
        return out


def resolve_reward(spec: str, *, judge_factory: Callable[[], Any] | None = None) -> Callable:
    """``blend-match``, ``blend-weighted``, ``judge`` (needs ``judge_factory``) or ``module:function``."""
    spec = str(spec).strip()
    if spec in REWARDS:
        return REWARDS[spec]
    if spec == "judge":
        if judge_factory is None:
            raise PluralignError("the judge reward needs a judge (--judge-model or --judge-url)", field="reward")
        return JudgeReward(judge_factory())
    mod, sep, fn = spec.partition(":")
    if not sep or not mod or not fn:
        raise PluralignError(f"unknown reward {spec!r} (blend-match, blend-weighted, judge, or module:function)", field="reward")
    try:
        obj = getattr(importlib.import_module(mod), fn)
    except (ImportError, AttributeError) as e:
        raise PluralignError(f"cannot import reward {spec!r} ({type(e).__name__}: {e})", field="reward") from None
    if not callable(obj):
        raise PluralignError(f"reward {spec!r} is not callable", field="reward")
    return obj


def _reward_name(fn) -> str:
    return getattr(fn, "__name__", None) or type(fn).__name__


def _call_reward(fn, kwargs: dict) -> list:
    try:
        sig = inspect.signature(fn)
        if not any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
            kwargs = {k: v for k, v in kwargs.items() if k in sig.parameters}
    except (TypeError, ValueError):
        pass
    return fn(**kwargs)


# --------------------------------------------------------------------------- the trainer
@dataclass
class Rollout:
    batch: dict  # pack(): input_ids, attention_mask, completion_ids, completion_mask  [N, ...]
    advantages: torch.Tensor  # [N]
    profile_embeds: torch.Tensor | None
    old_logps: torch.Tensor | None
    ref_logps: torch.Tensor | None
    truncated: torch.Tensor  # [N] bool
    uses: int = 0


class GRPOConditionalTrainer(ConditionalTrainer):
    """:class:`ConditionalTrainer` whose ``compute_loss`` samples groups and applies the GRPO loss.

    ``train_dataset`` holds :class:`PromptRow`; ``args.per_device_train_batch_size`` prompts per
    micro-step, each sampled ``settings.num_generations`` times. ``profile_table`` maps profile
    keys to embeddings for profile-routed adapters (None: no ``profile_embeds``)."""

    def __init__(self, *args, reward_funcs: Sequence[Callable], settings: GRPOSettings, tokenizer,
                 profile_table: dict | None = None, **kwargs):
        from pluralign.training.dpo import disable_dropout

        kwargs.setdefault("data_collator", PromptCollator())
        super().__init__(*args, **kwargs)
        self.settings = settings.validate()
        self.tok = tokenizer
        self.profile_table = profile_table
        self.reward_funcs = list(reward_funcs)
        if not self.reward_funcs:
            raise PluralignError("GRPO needs at least one reward function", field="reward")
        w = settings.reward_weights
        self.reward_weights = [1.0] * len(self.reward_funcs) if not w else [float(x) for x in w]
        if len(self.reward_weights) != len(self.reward_funcs):
            raise PluralignError(f"{len(self.reward_weights)} reward weights for {len(self.reward_funcs)} reward functions", field="reward_weights")
        disable_dropout(self.model)
        need_ref = settings.beta > 0 or any(getattr(f, "needs_reference_answers", False) for f in self.reward_funcs)
        from pluralign.training.text import snapshot_trainable

        self._ref_state = snapshot_trainable(self.model) if need_ref else None
        self._ref_answers: dict[str, str] = {}
        self._buffer: dict[int, Rollout] = {}
        self._micro = 0
        self.completion_log: list[dict] = []  # last rollout: prompt key, completion, reward (for inspection)

    # ------------------------------------------------------------------ reference policy
    @contextlib.contextmanager
    def reference_weights(self):
        """Inside: the trainable weights are those of the start of the stage (the reference)."""
        from pluralign.training.text import use_weights

        with use_weights(self.accelerator.unwrap_model(self.model), self._ref_state):
            yield

    def _profiles(self, rows: list[PromptRow]) -> torch.Tensor | None:
        if self.profile_table is None:
            return None
        try:
            return torch.stack([self.profile_table[r.profile.key()] for r in rows]).to(self.args.device)
        except (KeyError, AttributeError):
            raise PluralignError("a prompt row has no profile embedding (missing profile)", field="profile") from None

    def _reference_answers(self, rows: list[PromptRow]) -> list[str]:
        todo = [r for r in dict((r.key, r) for r in rows).values() if r.key not in self._ref_answers]
        if todo:
            model = self.accelerator.unwrap_model(self.model)
            with self.reference_weights():
                ids = generate_ids(model, self.tok, [r.prompt_ids for r in todo], profile_embeds=self._profiles(todo),
                                   max_new_tokens=self.settings.max_completion_length, do_sample=False)
            for r, c in zip(todo, ids):
                self._ref_answers[r.key] = decode(self.tok, c)
        return [self._ref_answers[r.key] for r in rows]

    # ------------------------------------------------------------------ rollout
    @torch.no_grad()
    def rollout(self, model, rows: list[PromptRow]) -> Rollout:
        from pluralign.training.text import completion_logps, pack

        st = self.settings
        G = st.num_generations
        rep = [r for r in rows for _ in range(G)]
        prof = self._profiles(rep)
        gen_model = self.accelerator.unwrap_model(model)
        comp = generate_ids(gen_model, self.tok, [r.prompt_ids for r in rep], profile_embeds=prof,
                            max_new_tokens=st.max_completion_length, do_sample=True, temperature=st.temperature,
                            top_p=st.top_p, top_k=st.top_k)
        eos = self.tok.eos_token_id
        truncated = torch.tensor([not (c and c[-1] == eos) for c in comp])
        texts = [decode(self.tok, c) for c in comp]
        N = len(rep)
        # rewards
        kwargs: dict = {"prompts": [r.prompt for r in rep], "completions": texts, "completion_ids": comp,
                        "profiles": [r.profile for r in rep]}
        for k in {k for r in rep for k in r.columns}:
            kwargs[k] = [r.columns.get(k) for r in rep]
        if any(getattr(f, "needs_reference_answers", False) for f in self.reward_funcs):
            kwargs["reference_completions"] = self._reference_answers(rep)
        per_fn = torch.full((N, len(self.reward_funcs)), float("nan"))
        for j, fn in enumerate(self.reward_funcs):
            vals = _call_reward(fn, dict(kwargs))
            try:
                vals = list(vals)
            except TypeError:
                raise PluralignError(f"reward function {_reward_name(fn)} returned {type(vals).__name__}, not a list", field="reward") from None
            if len(vals) != N:
                raise PluralignError(f"reward function {_reward_name(fn)} returned {len(vals)} values for {N} completions", field="reward")
            for i, v in enumerate(vals):
                if v is None:
                    continue
                if isinstance(v, bool) or not isinstance(v, (int, float)) and not (torch.is_tensor(v) and v.numel() == 1):
                    raise PluralignError(f"reward function {_reward_name(fn)} returned {v!r} for completion {i + 1} (want a number or None)", field="reward")
                v = float(v)
                if not math.isfinite(v):
                    raise PluralignError(f"reward function {_reward_name(fn)} returned {v} for completion {i + 1}", field="reward")
                per_fn[i, j] = v
        w = torch.tensor(self.reward_weights)
        applicable = ~torch.isnan(per_fn)
        total = torch.where(applicable, per_fn, torch.zeros_like(per_fn)) @ w
        grouped = total.view(-1, G)
        mean = grouped.mean(1, keepdim=True)
        std = grouped.std(1, keepdim=True) if G > 1 else torch.zeros_like(mean)
        adv = (grouped - mean)
        if st.scale_rewards == "group":
            adv = adv / (std + 1e-4)
        elif st.scale_rewards == "batch":
            adv = adv / (total.std() + 1e-4 if N > 1 else 1.0)
        adv = adv.reshape(-1)
        # log-probs of the sampled tokens: old policy (mu > 1) and reference (beta > 0)
        batch = pack([r.prompt_ids for r in rep], comp, self.tok.pad_token_id if self.tok.pad_token_id is not None else eos)
        batch = {k: v.to(self.args.device) for k, v in batch.items()}
        extra = {"profile_embeds": prof} if prof is not None else {}
        old = ref = None
        if st.num_iterations > 1:
            old = completion_logps(model, batch, extra, temperature=st.temperature)[0].detach()
        if st.beta > 0:
            with self.reference_weights():
                ref = completion_logps(model, batch, extra, temperature=st.temperature)[0].detach()
        # statistics
        lengths = batch["completion_mask"].sum(-1).cpu()
        self.record("reward", total.mean())
        self.record("reward_std", grouped.std(1).mean() if G > 1 else 0.0)
        self.record("frac_reward_zero_std", (std.view(-1) < 1e-6).float().mean())
        for j, fn in enumerate(self.reward_funcs):
            col = per_fn[:, j]
            if (~torch.isnan(col)).any():
                self.record(f"rewards/{_reward_name(fn)}", col[~torch.isnan(col)].mean())
        self.record("completions/mean_length", lengths.float().mean())
        self.record("completions/empty_frac", sum(1 for t in texts if not t) / N)
        self.record("completions/clipped_frac", truncated.float().mean())
        self.completion_log = [{"key": r.key, "completion": t, "reward": float(x)} for r, t, x in zip(rep, texts, total.tolist())]
        return Rollout(batch, adv.to(self.args.device), prof, old, ref, truncated.to(self.args.device))

    # ------------------------------------------------------------------ loss
    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        from pluralign.training.text import completion_logps

        st = self.settings
        ga = max(1, int(self.args.gradient_accumulation_steps))
        slot = self._micro % ga
        fresh = (self._micro // ga) % st.num_iterations == 0 or slot not in self._buffer
        self._micro += 1
        if fresh:
            self._buffer[slot] = self.rollout(model, inputs["rows"])
        ro = self._buffer[slot]
        ro.uses += 1
        extra = {"profile_embeds": ro.profile_embeds} if ro.profile_embeds is not None else {}
        lp, aux = completion_logps(model, ro.batch, extra, temperature=st.temperature)
        old = ro.old_logps if (ro.old_logps is not None and ro.uses > 1) else lp.detach()
        ratio = torch.exp(lp - old)
        A = ro.advantages.to(lp.dtype)[:, None]
        hi = st.epsilon if st.epsilon_high is None else st.epsilon_high
        clipped = ratio.clamp(1 - st.epsilon, 1 + hi)
        per_token = -torch.min(ratio * A, clipped * A)
        if st.beta > 0:
            d = ro.ref_logps - lp
            kl = torch.exp(d) - d - 1
            per_token = per_token + st.beta * kl
        m = ro.batch["completion_mask"].to(lp.dtype)
        if st.mask_truncated_completions:
            m = m * (~ro.truncated).to(m.dtype)[:, None]
        if st.loss_type == "grpo":
            loss = ((per_token * m).sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
        elif st.loss_type in ("dapo", "bnpo"):
            loss = (per_token * m).sum() / m.sum().clamp(min=1.0)
        else:  # dr_grpo
            loss = (per_token * m).sum() / (m.shape[0] * st.max_completion_length)
        tok_n = m.sum().clamp(min=1.0)
        is_clipped = ((ratio < 1 - st.epsilon) & (A < 0)) | ((ratio > 1 + hi) & (A > 0))
        self.record("clip_ratio", (is_clipped.to(m.dtype) * m).sum() / tok_n)
        if st.beta > 0:
            self.record("kl", (kl.detach() * m).sum() / tok_n)
        self.record("grpo_loss", loss)
        if aux is not None and torch.is_tensor(aux):
            self.record("aux_loss", aux)
            loss = loss + aux.to(loss.dtype)
        return (loss, {"logps": lp}) if return_outputs else loss


def build_grpo_trainer(model, tok, rows: list[PromptRow], reward_funcs: Sequence[Callable], settings: GRPOSettings, args, *,
                       profile_table: dict | None = None, callbacks: Sequence = ()) -> GRPOConditionalTrainer:
    """A ready GRPO trainer over ``rows`` (``args``: ``transformers.TrainingArguments``; its
    ``per_device_train_batch_size`` counts prompts)."""
    from pluralign.training.text import ListDataset

    if not rows:
        raise PluralignError("no prompts to train on", field="data")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return GRPOConditionalTrainer(model=model, args=args, train_dataset=ListDataset(rows), reward_funcs=reward_funcs,
                                  settings=settings, tokenizer=tok, profile_table=profile_table, callbacks=list(callbacks))


__all__ = ["GRPOSettings", "PromptRow", "GRPOConditionalTrainer", "build_grpo_trainer",
           "resolve_reward", "JudgeReward", "REWARDS", "blend_match_reward", "blend_weighted_reward"]
