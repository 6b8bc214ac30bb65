"""Conditional GRPO on tiny random models: the router sees each sample's own profile during
generation and during the loss; a toy reward rises; the loss options (KL, clipping, reuse of a
generation batch) work; bad rewards are one clear error."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import make_tiny_model

from pluralign.data.profile import Profile
from pluralign.errors import PluralignError
from pluralign.models.generation import decode, generate_ids
from pluralign.training import TrainConfig
from pluralign.training.grpo import GRPOSettings, PromptRow, build_grpo_trainer, resolve_reward
from pluralign.training.run import make_training_args

pytestmark = pytest.mark.usefixtures("one_thread")

PROFILES = [Profile(country=c) for c in ("Thailand", "Germany", "Mexico", "Japan")]
DIM = 16
TARGET = set(range(100, 160))  # 60 of the 600 token ids


def toy_reward(prompts, completions, completion_ids, **_):
    """Fraction of the completion's tokens in TARGET."""
    return [sum(t in TARGET for t in ids) / max(1, len(ids)) for ids in completion_ids]


def _rows(tok, profiles=PROFILES):
    rows = []
    for i, p in enumerate(profiles):
        text = tok.apply_chat_template([{"role": "system", "content": p.describe()}, {"role": "user", "content": f"word {i}"}],
                                       tokenize=False, add_generation_prompt=True)
        rows.append(PromptRow(prompt_ids=tok(text, add_special_tokens=False)["input_ids"], prompt=text, key=str(i), profile=p))
    return rows


def _table(profiles=PROFILES):
    g = torch.Generator().manual_seed(0)
    return {p.key(): torch.randn(DIM, generator=g) for p in profiles}


def _cuma(seed=0, lm_scale=1.0, **over):
    from pluralign.adapters import adapter_config, build_adapted_model

    torch.manual_seed(seed)
    base = make_tiny_model("llama", seed=seed)
    with torch.no_grad():  # a random tiny LM is near-uniform; a sharper output layer makes the toy learnable fast
        base.lm_head.weight.mul_(lm_scale)
    return build_adapted_model(base, "cuma", adapter_config("cuma", profile_dim=DIM, **over))


def _trainer(tmp_path, model, tok, rows, rewards, settings, table, **kw):
    cfg = TrainConfig(steps=kw.pop("steps", 2), batch_size=kw.pop("batch_size", 2), lr=kw.pop("lr", 1e-2), save_steps=0,
                      logging_steps=1, progress=False, warmup_ratio=0.0, scheduler="constant", out=str(tmp_path), seed=0)
    args = make_training_args(cfg, Path(tmp_path), device="cpu", bf16=False)
    return build_grpo_trainer(model, tok, rows, rewards, settings, args, profile_table=table)


# ------------------------------------------------------------------ the profile reaches the router
def test_router_sees_each_samples_profile_in_generation_and_loss(tmp_path, tiny_tokenizer, monkeypatch):
    """Record, for every router call, the profile rows the router used and the token rows of the
    forward they belong to; each row's profile must be the embedding of the profile whose prompt
    that row holds, in generate() (no grad) and in the loss forward (grad on)."""
    from pluralign.adapters.moe_lora import MoERouter, active_context

    tok = tiny_tokenizer
    rows = _rows(tok)
    table = _table()
    model = _cuma()
    seen_ids: dict[int, torch.Tensor] = {}  # routing context -> input ids of its first (prefill / full) forward
    routed: list[tuple[int, torch.Tensor, bool]] = []
    alive: list = []  # every context seen stays referenced, so no later context can reuse its id()

    def pre_hook(module, args, kwargs):
        ctx = active_context()
        ids = kwargs.get("input_ids")
        if ctx is not None and ids is not None and id(ctx) not in seen_ids:
            alive.append(ctx)
            seen_ids[id(ctx)] = ids.detach().clone()

    real_route = MoERouter.route

    def route(self, h, ctx):
        routed.append((id(ctx), self._profile_rows(ctx, h.shape[0]).detach().clone(), torch.is_grad_enabled()))
        return real_route(self, h, ctx)

    monkeypatch.setattr(MoERouter, "route", route)
    model.model.register_forward_pre_hook(pre_hook, with_kwargs=True)
    tr = _trainer(tmp_path, model, tok, rows, [toy_reward], GRPOSettings(num_generations=3, max_completion_length=3), table,
                  steps=2, batch_size=2)
    tr.train()

    def profile_of(row: torch.Tensor) -> str:
        r = [t for t in row.tolist()]
        start = next(i for i, t in enumerate(r) if t != tok.pad_token_id)
        hits = [pr.profile.key() for pr in rows if r[start : start + len(pr.prompt_ids)] == pr.prompt_ids]
        assert len(hits) == 1, "each sequence holds exactly one known prompt"
        return hits[0]

    modes = set()
    checked = 0
    for ctx_id, prof_rows, grad in routed:
        ids = seen_ids[ctx_id]
        assert prof_rows.shape[0] == ids.shape[0]
        for b in range(ids.shape[0]):
            assert torch.allclose(prof_rows[b].float(), table[profile_of(ids[b])]), "router got another sample's profile"
            checked += 1
        modes.add(grad)
    assert modes == {False, True}  # generation (no grad) and the loss (grad) were both observed
    assert checked > 0
    # several profiles in one batch: the batches really mixed profiles
    assert any(len({tuple(r.tolist()) for r in p}) > 1 for _, p, _ in routed)


# ------------------------------------------------------------------ it learns
def test_grpo_raises_a_toy_reward(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    rows = _rows(tok)
    table = _table()
    model = _cuma(lm_scale=20.0, target_modules=("q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))

    def mean_reward(n=16):
        torch.manual_seed(123)
        rep = [r for r in rows for _ in range(n)]
        emb = torch.stack([table[r.profile.key()] for r in rep])
        ids = generate_ids(model, tok, [r.prompt_ids for r in rep], profile_embeds=emb, max_new_tokens=4, do_sample=True)
        return sum(toy_reward(None, None, ids)) / len(ids)

    before = mean_reward()
    tr = _trainer(tmp_path, model, tok, rows, [toy_reward], GRPOSettings(num_generations=4, max_completion_length=4), table,
                  steps=10, batch_size=4, lr=3e-2)
    tr.train()
    after = mean_reward()
    logged = [h["reward"] for h in tr.state.log_history if "reward" in h]
    assert len(logged) == 10
    assert after > before + 0.2, (before, after, logged)


# ------------------------------------------------------------------ loss options
def test_kl_clip_and_generation_reuse(tmp_path, tiny_tokenizer, monkeypatch):
    from pluralign.training import grpo as G
    from pluralign.training.trainer import trainable_state

    tok = tiny_tokenizer
    rows = _rows(tok, PROFILES[:2])
    table = _table(PROFILES[:2])
    model = _cuma(lm_scale=20.0)
    calls = []
    real = G.GRPOConditionalTrainer.rollout

    def counting(self, model, rows):
        calls.append(len(rows))
        return real(self, model, rows)

    monkeypatch.setattr(G.GRPOConditionalTrainer, "rollout", counting)
    st = GRPOSettings(num_generations=4, max_completion_length=4, beta=0.2, epsilon=0.01, num_iterations=2, loss_type="grpo")
    tr = _trainer(tmp_path, model, tok, rows, [toy_reward], st, table, steps=4, batch_size=2, lr=5e-2)
    start = trainable_state(model)
    with tr.reference_weights():  # swapping the reference in and out leaves the weights untouched
        pass
    assert all(torch.equal(v, trainable_state(model)[k]) for k, v in start.items())
    tr.train()
    assert len(calls) == 2  # mu = 2: one generation batch per two optimizer steps
    logs = [h for h in tr.state.log_history if "grpo_loss" in h]
    assert all("kl" in h for h in logs) and logs[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # policy == reference at step 1
    assert any(h["kl"] > 0 for h in logs[1:])
    assert any(h["clip_ratio"] > 0 for h in logs)  # the second use of a batch is off-policy: the tight clip bites
    # the reference is the start of the stage, not the current policy
    after = trainable_state(model)
    with tr.reference_weights():
        ref = trainable_state(model)
    assert all(torch.equal(ref[k], start[k]) for k in start) and any(not torch.equal(after[k], start[k]) for k in start)


def test_group_normalised_advantages(tmp_path, tiny_tokenizer):
    tok = tiny_tokenizer
    rows = _rows(tok, PROFILES[:2])
    model = _cuma()
    tr = _trainer(tmp_path, model, tok, rows, [lambda prompts, completions, **_: [float(len(c)) for c in completions]],
                  GRPOSettings(num_generations=4, max_completion_length=6), _table(PROFILES[:2]))
    ro = tr.rollout(model, rows)
    adv = ro.advantages.view(2, 4)
    assert torch.allclose(adv.mean(1), torch.zeros(2), atol=1e-5)
    for g in adv:
        if g.abs().sum() > 0:
            assert g.std() == pytest.approx(1.0, abs=1e-2)


# ------------------------------------------------------------------ bad input
def test_bad_rewards_are_clear_errors(tmp_path, tiny_tokenizer, monkeypatch):
    from pluralign.training import grpo as G

    tok = tiny_tokenizer
    rows = _rows(tok, PROFILES[:2])
    model = _cuma()
    st = GRPOSettings(num_generations=2, max_completion_length=2)
    for fn, msg in ((lambda prompts, completions, **_: [1.0], "returned 1 values for 4"),
                    (lambda prompts, completions, **_: [float("nan")] * 4, "returned nan"),
                    (lambda prompts, completions, **_: ["good"] * 4, "want a number")):
        tr = _trainer(tmp_path, model, tok, rows, [fn], st, _table(PROFILES[:2]))
        with pytest.raises(PluralignError, match=msg):
            tr.rollout(model, rows)
    for spec, msg in (("nonsense", "unknown reward"), ("no_such_module_xyz:f", "cannot import"), ("judge", "needs a judge")):
        with pytest.raises(PluralignError, match=msg):
            resolve_reward(spec)
    assert resolve_reward("pluralign.training.grpo:blend_match_reward") is G.blend_match_reward
    with pytest.raises(PluralignError, match="num_generations"):
        GRPOSettings(num_generations=1).validate()
    # empty completions (EOS first) are kept, counted and scored; training does not crash
    eos = tok.eos_token_id
    monkeypatch.setattr(G, "generate_ids", lambda model, tok, prompts, **kw: [[eos] for _ in prompts])
    not_applicable = lambda prompts, completions, **_: [None if not c else 1.0 for c in completions]  # noqa: E731
    tr = _trainer(tmp_path / "e", model, tok, rows, [not_applicable, toy_reward], st, _table(PROFILES[:2]), steps=1)
    tr.train()
    h = next(h for h in tr.state.log_history if "completions/empty_frac" in h)
    assert h["completions/empty_frac"] == 1.0 and math.isfinite(h["loss"])


def test_judge_reward_compares_with_the_reference_policys_answer(tmp_path, tiny_tokenizer):
    from pluralign.training.grpo import JudgeReward

    class StubJudge:
        def __init__(self):
            self.items = []

        def compare_both_orders(self, items):
            self.items += items
            return [None if i == 0 else 0.75 for i, _ in enumerate(items)]  # one off-format verdict per call

    tok = tiny_tokenizer
    rows = _rows(tok, PROFILES[:2])
    table = _table(PROFILES[:2])
    model = _cuma()
    emb = torch.stack([table[r.profile.key()] for r in rows])
    greedy = [decode(tok, c) for c in generate_ids(model, tok, [r.prompt_ids for r in rows], profile_embeds=emb, max_new_tokens=3)]
    judge = JudgeReward(StubJudge())
    tr = _trainer(tmp_path, model, tok, rows, [judge], GRPOSettings(num_generations=2, max_completion_length=3), table, steps=2, lr=5e-2)
    tr.train()
    items = judge.judge.items
    assert len(items) == 2 * 2 * 2  # 2 steps x 2 prompts x 2 completions
    by_prompt = {r.prompt: g for r, g in zip(rows, greedy)}
    assert all(ref == by_prompt[p] for p, _, ref, _ in items)  # the start-of-stage policy's greedy answer, also at step 2
    assert all(prof in PROFILES[:2] for *_, prof in items)
    assert judge.off_format == 2 and len(tr._ref_answers) == 2
    assert [h["rewards/judge"] for h in tr.state.log_history if "rewards/judge" in h] == [pytest.approx((0.5 + 3 * 0.75) / 4)] * 2
