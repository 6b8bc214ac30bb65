"""VSM objectives that do not depend on the constant C, the item wordings, and the batched scoring
of a population on several wordings at once (issue 29, parts 1 and 2).

**Why.** A VSM 2013 index is ``s_d = W_d . m + C_d`` (``m``: the 24 item means; ``W``:
:func:`~pluralign.blackbox.vsm.index_matrix`). The manual leaves ``C_d`` to the researcher and calls
the scores comparative only, so an L1 between ``s`` and a country's published scores changes with
``C``: a search on it fits the offset as well as the values. Three objectives (:data:`OBJECTIVES`),
each also a read-out; ``raw = W . m`` below is the score without any constant:

* ``l1-c50`` (the objective used before): L1 between ``raw + C`` and the target, with the fixed
  constants of :class:`~pluralign.blackbox.vsm.VSMConfig` (50 for every dimension unless set). It
  depends on ``C``.
* ``l1-calibrated``: ``C`` is fitted per dimension on *calibration countries* that are not the target:
  ``C_d = mean_B h_B,d - raw_naive,d``, so that the model without a prompt scores, on average over
  the calibration countries, what they score (the target is dropped from them, so it never enters
  the fit). The loss is the L1 of ``raw + C_cal`` to the target, that is
  ``|raw - raw_naive - (h_A - mean_B h_B)|``: the prompt's shift from no prompt against the target's
  distance from the calibration countries' mean. The fixed constants do not enter.
* ``diff`` (between-country differences): for every calibration country B (the target dropped),
  the prompt's scores minus the scores of B's in-context reference (the model without a soft prompt,
  told "You are a person from B", :func:`~pluralign.blackbox.population.in_context_system`) against
  Hofstede's ``h_A - h_B``; L1 over the dimensions that A and B both have (mean or sum as
  ``VSMConfig.reduction``), then the mean over B. ``C`` cancels in every difference: adding one
  number to every score, the prompt's and the references', changes nothing.

Each wording is its own instrument: the calibration (the model's raw scores without a prompt, and
those of the references) is measured on each wording separately and a wording's loss uses its own.
So, for ``l1-calibrated``, the model without a prompt has the same loss on every wording.

The seed paper's convention (:data:`SEED_PAPER_CONVENTION`) is unknown, so its numbers are not
comparable with any of these.

**Wordings** (:data:`WORDINGS`): ``original`` (``vsm2013_items.json``), ``reworded`` and
``reworded2``, three independent paraphrases of the same 24 items with the same answer scales and
index formulas. A search may average its objective over several wordings (:class:`ObjectiveEvaluator`)
so that it cannot fit one; ``reworded2`` (:data:`REPORT_ONLY_WORDINGS`) is refused there: it is the
held-out wording on which the fit is reported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import numpy as np

from pluralign.blackbox.population import PopulationConfig, PromptPopulation, vsm_prompts
from pluralign.blackbox.vsm import VSMConfig, index_matrix, l1_loss
from pluralign.data.loaders.hofstede import (
    DIMENSIONS, VSM_ITEMS_FILE, VSM_REWORDED_FILE, HofstedeTarget, VSMQuestionnaire, country_target, load_vsm_items,
)
from pluralign.errors import PluralignError
from pluralign.paths import RESOURCES

#: the objectives (and read-outs), see the module docstring
OBJECTIVES: tuple[str, ...] = ("l1-c50", "l1-calibrated", "diff")
#: short description of each, for help texts and tables
OBJECTIVE_LABELS = {
    "l1-c50": "L1, fixed C",
    "l1-calibrated": "L1, C calibrated",
    "diff": "between-country differences",
}
#: the shipped wordings of the 24 VSM 2013 items (same item numbers, scales and index formulas)
WORDINGS = {
    "original": VSM_ITEMS_FILE,
    "reworded": VSM_REWORDED_FILE,
    "reworded2": RESOURCES / "vsm2013_items_reworded2.json",
}
#: wordings that a search never uses: the fit is reported on them
REPORT_ONLY_WORDINGS: tuple[str, ...] = ("reworded2",)
DEFAULT_OBJECTIVE = "diff"
DEFAULT_SEARCH_WORDINGS: tuple[str, ...] = ("original", "reworded")
#: calibration countries: all six dimensions measured, spread over regions, none of them USA, China,
#: India or a member of Hofstede's Arab-countries region (the study's targets)
DEFAULT_CALIBRATION: tuple[str, ...] = ("GBR", "DEU", "FRA", "SWE", "POL", "RUS", "TUR", "JPN", "KOR", "IDN", "BRA", "MEX")
SEED_PAPER_CONVENTION = ("unknown: the seed paper (USA 21.94 -> 2.86) states neither its constants C, nor whether its L1 is a sum "
                         "or a mean over dimensions, nor its item wording, so its numbers are not comparable with ours")


# ------------------------------------------------------------------------------------ parsing
def _csv(s: str | Sequence[str]) -> list[str]:
    if isinstance(s, str):
        return [x.strip() for x in s.split(",") if x.strip()]
    return [str(x).strip() for x in s if str(x).strip()]


def parse_objective(name: str, *, flag: str = "--objective") -> str:
    if name not in OBJECTIVES:
        raise PluralignError(f"unknown objective {name!r} (choose {', '.join(OBJECTIVES)})", field=flag)
    return name


def parse_wordings(s: str | Sequence[str], *, search: bool = True, flag: str = "--wordings") -> tuple[str, ...]:
    """Wording names, each once; with ``search`` the report-only wordings are refused."""
    names = _csv(s)
    if not names:
        raise PluralignError(f"names no wording (give e.g. {','.join(DEFAULT_SEARCH_WORDINGS)})", field=flag)
    seen = []
    for n in names:
        if n not in WORDINGS:
            raise PluralignError(f"unknown wording {n!r} (shipped: {', '.join(WORDINGS)})", field=flag)
        if search and n in REPORT_ONLY_WORDINGS:
            raise PluralignError(f"{n} is the held-out wording: it is only scored for the report, never searched "
                                 f"(search wordings: {', '.join(w for w in WORDINGS if w not in REPORT_ONLY_WORDINGS)})", field=flag)
        if n in seen:
            raise PluralignError(f"{n} is given twice", field=flag)
        seen.append(n)
    return tuple(seen)


def parse_calibration(s: str | Sequence[str], *, flag: str = "--calibration-countries") -> list[HofstedeTarget]:
    """Calibration countries (ISO3 codes, Hofstede codes or names), each once, each with a score."""
    names = _csv(s)
    if not names:
        raise PluralignError("names no country (give e.g. " + ",".join(DEFAULT_CALIBRATION[:4]) + ")", field=flag)
    out: list[HofstedeTarget] = []
    for n in names:
        try:
            t = country_target(n)
        except PluralignError as e:
            raise PluralignError(e.message, field=flag) from None
        if any(t.code == o.code for o in out):
            raise PluralignError(f"{n} ({t.name}) is given twice", field=flag)
        out.append(t)
    return out


def same_unit(a: HofstedeTarget, b: HofstedeTarget) -> bool:
    return a.code == b.code or (a.iso3 is not None and a.iso3 == b.iso3)


# ------------------------------------------------------------------------------------ raw scores
def raw_scores(means: np.ndarray, q: VSMQuestionnaire | None = None) -> np.ndarray:
    """Index scores without any constant, ``W . m`` (``[..., 6]`` from item means ``[..., 24]``)."""
    m = np.asarray(means, dtype=np.float64)
    if m.shape[-1] != 24:
        raise PluralignError(f"expected 24 item means, got {m.shape[-1]}", field="means")
    return m @ index_matrix(q).T


def fixed_constants(vsm: VSMConfig | None = None) -> np.ndarray:
    vsm = vsm or VSMConfig()
    return np.array([vsm.constants[d] for d in DIMENSIONS], dtype=np.float64)


def score_vector(d: Mapping[str, float] | Sequence[float] | np.ndarray) -> np.ndarray:
    if isinstance(d, Mapping):
        return np.array([float(d[k]) if d.get(k) is not None else math.nan for k in DIMENSIONS])
    return np.asarray(d, dtype=np.float64)


def _dict(v: np.ndarray) -> dict[str, float]:
    return {k: float(x) for k, x in zip(DIMENSIONS, np.asarray(v, dtype=np.float64))}


# ------------------------------------------------------------------------------------ calibration
@dataclass
class Reference:
    """A calibration country: its Hofstede scores and, per wording, the raw scores of its in-context
    reference (``None`` where not measured: then only ``l1-calibrated`` can use it)."""

    code: str
    iso3: str | None
    name: str
    target: dict[str, float]
    raw: dict[str, np.ndarray] = field(default_factory=dict)

    def unit(self) -> HofstedeTarget:
        return HofstedeTarget(code=self.code, iso3=self.iso3, name=self.name, unit_type="country", scores=dict(self.target))


@dataclass
class Calibration:
    """Per wording, the raw scores of the model without a prompt (``naive``), and the calibration
    countries (:class:`Reference`). Only the countries that are not the target are used for a target."""

    naive: dict[str, np.ndarray]
    references: list[Reference]

    def for_target(self, target: HofstedeTarget) -> list[Reference]:
        refs = [r for r in self.references if not same_unit(r.unit(), target)]
        if not refs:
            raise PluralignError(f"no calibration country is left once the target {target.code} is left out",
                                 field="--calibration-countries")
        return refs

    def countries(self, target: HofstedeTarget | None = None) -> list[str]:
        return [r.code for r in (self.for_target(target) if target is not None else self.references)]

    def constants(self, target: HofstedeTarget, wording: str) -> np.ndarray:
        """``C_d = mean_B h_B,d - raw_naive,d`` over the calibration countries (the target left out)
        that have dimension d; NaN where none has it."""
        if wording not in self.naive:
            raise PluralignError(f"the calibration has no scores for the wording {wording!r}", field="wordings")
        H = np.stack([score_vector(r.target) for r in self.for_target(target)])  # [B, 6], NaN = not measured
        with np.errstate(invalid="ignore"):
            have = ~np.isnan(H)
            mean = np.where(have.any(0), np.nansum(H, 0) / np.maximum(have.sum(0), 1), np.nan)
        return mean - self.naive[wording]

    def to_dict(self) -> dict:
        return {"naive_raw": {w: _dict(v) for w, v in self.naive.items()},
                "references": [{"code": r.code, "iso3": r.iso3, "name": r.name, "target": dict(r.target),
                                "raw": {w: _dict(v) for w, v in r.raw.items()}} for r in self.references]}

    @classmethod
    def from_dict(cls, d: Mapping) -> "Calibration":
        try:
            naive = {w: score_vector(v) for w, v in d["naive_raw"].items()}
            refs = [Reference(code=r["code"], iso3=r.get("iso3"), name=r.get("name", r["code"]), target=dict(r["target"]),
                              raw={w: score_vector(v) for w, v in (r.get("raw") or {}).items()}) for r in d["references"]]
        except (KeyError, TypeError, AttributeError) as e:
            raise PluralignError(f"not a calibration record (missing {e})", field="calibration") from None
        return cls(naive=naive, references=refs)


# ------------------------------------------------------------------------------------ objectives
@dataclass
class Objective:
    """One of :data:`OBJECTIVES` with what it needs: the fixed constants and reduction (``vsm``) and,
    for ``l1-calibrated`` and ``diff``, the :class:`Calibration`."""

    name: str = DEFAULT_OBJECTIVE
    vsm: VSMConfig = field(default_factory=VSMConfig)
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        parse_objective(self.name, flag="objective")
        if self.name != "l1-c50" and self.calibration is None:
            raise PluralignError(f"the {self.name} objective needs a calibration (calibration countries scored by the model)",
                                 field="calibration")

    def loss(self, raw: np.ndarray, target: HofstedeTarget, wording: str, name: str | None = None) -> np.ndarray:
        """The loss of raw scores ``[..., 6]`` measured on ``wording`` (this objective, or ``name``)."""
        return objective_loss(name or self.name, raw, target, wording=wording, vsm=self.vsm, calibration=self.calibration)

    def readouts(self, raw: np.ndarray, target: HofstedeTarget, wording: str) -> dict[str, np.ndarray]:
        """Every objective that can be computed (all three with a calibration that has references'
        scores on ``wording``)."""
        out = {}
        for n in OBJECTIVES:
            if n != "l1-c50" and (self.calibration is None or wording not in self.calibration.naive):
                continue
            if n == "diff" and any(wording not in r.raw for r in self.calibration.for_target(target)):
                continue
            out[n] = self.loss(raw, target, wording, n)
        return out


def objective_loss(name: str, raw: np.ndarray, target: HofstedeTarget | Mapping[str, float], *, wording: str = "original",
                   vsm: VSMConfig | None = None, calibration: Calibration | None = None) -> np.ndarray:
    """The loss ``name`` of raw scores ``raw[..., 6]`` (``W . m``, no constant) to ``target``; see the
    module docstring. ``wording`` picks the calibration's measurements."""
    vsm = vsm or VSMConfig()
    raw = np.asarray(raw, dtype=np.float64)
    if raw.shape[-1] != len(DIMENSIONS):
        raise PluralignError(f"expected {len(DIMENSIONS)} raw scores per row, got {raw.shape[-1]}", field="scores")
    if not isinstance(target, HofstedeTarget):
        target = HofstedeTarget(code="?", iso3=None, name="target", unit_type="country", scores=dict(target))
    if not target.scores:
        raise PluralignError("the target has no measured dimension", field="country")
    if name == "l1-c50":
        return l1_loss(raw + fixed_constants(vsm), target, vsm)
    if calibration is None:
        raise PluralignError(f"the {name} objective needs a calibration", field="calibration")
    tv = score_vector(target.scores)
    if name == "l1-calibrated":
        C = calibration.constants(target, wording)
        idx = [i for i in range(len(DIMENSIONS)) if not math.isnan(tv[i]) and not math.isnan(C[i])]
        if not idx:
            raise PluralignError(f"no dimension of {target.code} is measured in any calibration country", field="--calibration-countries")
        d = np.abs(raw[..., idx] + C[idx] - tv[idx])
        return d.mean(-1) if vsm.reduction == "mean" else d.sum(-1)
    if name == "diff":
        losses = []
        for r in calibration.for_target(target):
            if wording not in r.raw:
                raise PluralignError(f"calibration country {r.code} has no reference scores on the wording {wording!r}",
                                     field="calibration")
            hb, sb = score_vector(r.target), r.raw[wording]
            idx = [i for i in range(len(DIMENSIONS)) if not math.isnan(tv[i]) and not math.isnan(hb[i])]
            if not idx:
                continue
            d = np.abs((raw[..., idx] - sb[idx]) - (tv[idx] - hb[idx]))
            losses.append(d.mean(-1) if vsm.reduction == "mean" else d.sum(-1))
        if not losses:
            raise PluralignError(f"no calibration country shares a measured dimension with {target.code}", field="--calibration-countries")
        return np.mean(np.stack(losses), axis=0)
    raise PluralignError(f"unknown objective {name!r} (choose {', '.join(OBJECTIVES)})", field="objective")


def pairwise_diff(raw_a: np.ndarray, raw_b: np.ndarray, target_a: Mapping[str, float], target_b: Mapping[str, float],
                  reduction: str = "mean") -> float:
    """Between two countries' prompts: L1 between their score difference and Hofstede's, over the
    dimensions both have (``C`` cancels). A model giving both the same scores gets ``|h_A - h_B|``."""
    ha, hb = score_vector(target_a), score_vector(target_b)
    idx = [i for i in range(len(DIMENSIONS)) if not math.isnan(ha[i]) and not math.isnan(hb[i])]
    if not idx:
        return math.nan
    d = np.abs((np.asarray(raw_a)[idx] - np.asarray(raw_b)[idx]) - (ha[idx] - hb[idx]))
    return float(d.mean() if reduction == "mean" else d.sum())


# ------------------------------------------------------------------------------------ scoring
def load_wording(name: str) -> VSMQuestionnaire:
    if name not in WORDINGS:
        raise PluralignError(f"unknown wording {name!r} (shipped: {', '.join(WORDINGS)})", field="wordings")
    return load_vsm_items(WORDINGS[name])


class WordingPopulation(PromptPopulation):
    """The 24 VSM items in several wordings, each under several system messages (``contexts``), for a
    whole population of soft prompts in one batched engine (the prefix shared by every prompt is run
    once per candidate, as in :class:`~pluralign.blackbox.population.PromptPopulation`).

    ``questionnaires`` overrides the shipped files of ``wordings`` (tests use short items)."""

    def __init__(self, model, tok, wordings: Sequence[str], *, contexts: Sequence[str | None] = (None,),
                 cfg: PopulationConfig | None = None, questionnaires: Mapping[str, VSMQuestionnaire] | None = None) -> None:
        from pluralign.evaluation.scoring import OptionScorer

        cfg = cfg or PopulationConfig()
        self.wordings = tuple(wordings)
        if not self.wordings:
            raise PluralignError("no wording to score", field="wordings")
        self.contexts = tuple(contexts)
        self.questionnaires = {w: (questionnaires or {}).get(w) or load_wording(w) for w in self.wordings}
        scorer = OptionScorer(model, tok)
        seqs, label_ids = [], []
        for w in self.wordings:
            prompts, labels = vsm_prompts(tok, self.questionnaires[w], contexts=self.contexts, chat_template=cfg.chat_template)
            seqs += [scorer._encode_prompt(p) for p in prompts]
            label_ids += [scorer.label_token_ids(p, labels) for p in prompts]
        super().__init__(model, seqs, label_ids, cfg=cfg)
        self._W = np.stack([index_matrix(self.questionnaires[w]) for w in self.wordings])  # [W, 6, 24]

    def score(self, X, progress: Callable[[int], None] | None = None) -> dict:
        """``raw[P, W, C, 6]`` (no constant), ``means[P, W, C, 24]`` and ``mass[P, W, C, 24]``."""
        lp = self._memo_logprobs(X, progress=progress).double().numpy()
        P, K = lp.shape[0], lp.shape[-1]
        lp = lp.reshape(P, len(self.wordings), len(self.contexts), 24, K)
        mass = np.exp(lp).sum(-1)
        w = np.exp(lp - lp.max(-1, keepdims=True))
        probs = w / w.sum(-1, keepdims=True)
        means = probs @ np.arange(1, K + 1)
        raw = np.einsum("pwci,wdi->pwcd", means, self._W)
        return {"raw": raw, "means": means, "mass": mass}


@dataclass
class ObjectiveResult:
    loss: np.ndarray  # [P] the objective, mean over the wordings
    per_wording: np.ndarray  # [P, W]
    raw: np.ndarray  # [P, W, 6] raw scores (contexts averaged)
    scores: np.ndarray  # [P, 6] raw + the fixed constants on the first wording (the logs' scores)
    mass: np.ndarray  # [P, W, n_ctx, 24]

    @property
    def mean_mass(self) -> np.ndarray:
        return self.mass.mean(axis=(1, 2, 3))


class ObjectiveEvaluator(WordingPopulation):
    """What :func:`~pluralign.blackbox.search.run_search` minimises: ``objective`` on each of the
    search ``wordings`` (the report-only wordings are refused), averaged. Item means are averaged over
    ``cfg.contexts`` as in :class:`~pluralign.blackbox.population.PopulationEvaluator`."""

    def __init__(self, model, tok, objective: Objective, *, wordings: Sequence[str] = DEFAULT_SEARCH_WORDINGS,
                 cfg: PopulationConfig | None = None, questionnaires: Mapping[str, VSMQuestionnaire] | None = None) -> None:
        wordings = parse_wordings(list(wordings), search=True, flag="wordings")
        cfg = cfg or PopulationConfig()
        super().__init__(model, tok, wordings, contexts=cfg.contexts, cfg=cfg, questionnaires=questionnaires)
        self.objective = objective
        self.vsm = objective.vsm

    @property
    def objective_key(self) -> dict:
        cal = self.objective.calibration
        return {"objective": self.objective.name, "wordings": list(self.wordings),
                "calibration": [r.code for r in cal.references] if cal is not None and self.objective.name != "l1-c50" else None}

    def evaluate(self, X, target: HofstedeTarget | None = None, progress: Callable[[int], None] | None = None) -> ObjectiveResult:
        s = self.score(X, progress=progress)
        raw = s["raw"].mean(2)  # contexts averaged: [P, W, 6]
        scores = raw[:, 0] + fixed_constants(self.vsm)
        if target is None:
            per = np.full(raw.shape[:2], np.nan)
        else:
            per = np.stack([self.objective.loss(raw[:, i], target, w) for i, w in enumerate(self.wordings)], axis=1)
        return ObjectiveResult(loss=per.mean(1), per_wording=per, raw=raw, scores=scores, mass=s["mass"])


def build_calibration(model, tok, countries: Sequence[HofstedeTarget], *, wordings: Sequence[str] = tuple(WORDINGS),
                      cfg: PopulationConfig | None = None, extra_contexts: Sequence[str] = (),
                      questionnaires: Mapping[str, VSMQuestionnaire] | None = None) -> tuple[Calibration, dict]:
    """Score, on every wording in one batched pass, the model without a prompt, each calibration
    country's in-context reference and ``extra_contexts`` (e.g. the target's own in-context
    baseline). Returns the :class:`Calibration` and ``{"extra": {context: {"raw": {w: [6]}, "mass":
    {w: float}}}, "naive_mass": {w: float}}``."""
    import dataclasses

    import torch

    from pluralign.blackbox.population import in_context_system

    cfg = dataclasses.replace(cfg or PopulationConfig(), tokens=0, memo=0, contexts=(None,))
    ref_ctx = [in_context_system(c.iso3 or c.name) for c in countries]
    contexts = [None, *ref_ctx, *extra_contexts]
    pop = WordingPopulation(model, tok, wordings, contexts=contexts, cfg=cfg, questionnaires=questionnaires)
    s = pop.score(torch.zeros(1, 0, pop.hidden))
    raw, mass = s["raw"][0], s["mass"][0].mean(-1)  # [W, C, 6], [W, C]
    ws = pop.wordings
    naive = {w: raw[i, 0] for i, w in enumerate(ws)}
    refs = [Reference(code=c.code, iso3=c.iso3, name=c.name, target=dict(c.scores), raw={w: raw[i, 1 + j] for i, w in enumerate(ws)})
            for j, c in enumerate(countries)]
    k0 = 1 + len(countries)
    extra = {ctx: {"raw": {w: raw[i, k0 + j] for i, w in enumerate(ws)}, "mass": {w: float(mass[i, k0 + j]) for i, w in enumerate(ws)}}
             for j, ctx in enumerate(extra_contexts)}
    return Calibration(naive=naive, references=refs), {"extra": extra, "naive_mass": {w: float(mass[i, 0]) for i, w in enumerate(ws)}}


def score_on_wordings(model, tok, prompt, *, wordings: Sequence[str] = tuple(WORDINGS), cfg: PopulationConfig | None = None,
                      questionnaires: Mapping[str, VSMQuestionnaire] | None = None) -> dict:
    """One soft prompt ``(tokens, hidden)`` scored exactly (fp32, no memo) on every wording:
    ``{"raw": {w: [6]}, "mass": {w: float}}``."""
    import dataclasses

    import torch

    x = torch.as_tensor(prompt, dtype=torch.float32)
    if x.dim() != 2:
        raise PluralignError(f"the prompt must be (tokens, hidden), got shape {tuple(x.shape)}", field="prompt")
    cfg = dataclasses.replace(cfg or PopulationConfig(), tokens=x.shape[0], memo=0, autocast="off")
    pop = WordingPopulation(model, tok, wordings, contexts=cfg.contexts, cfg=cfg, questionnaires=questionnaires)
    s = pop.score(x[None])
    raw = s["raw"][0].mean(1)  # [W, 6]
    mass = s["mass"][0].mean(axis=(1, 2))
    return {"raw": {w: raw[i] for i, w in enumerate(pop.wordings)}, "mass": {w: float(mass[i]) for i, w in enumerate(pop.wordings)}}


def readout_table(objective: Objective, raw_by_wording: Mapping[str, np.ndarray], target: HofstedeTarget) -> dict[str, dict[str, float]]:
    """``{wording: {objective name: loss}}`` of one set of raw scores per wording."""
    return {w: {n: float(np.asarray(v).reshape(-1)[0]) for n, v in objective.readouts(np.asarray(r)[None], target, w).items()}
            for w, r in raw_by_wording.items()}


__all__ = [
    "DEFAULT_CALIBRATION", "DEFAULT_OBJECTIVE", "DEFAULT_SEARCH_WORDINGS", "OBJECTIVES", "OBJECTIVE_LABELS", "REPORT_ONLY_WORDINGS",
    "SEED_PAPER_CONVENTION", "WORDINGS", "Calibration", "Objective", "ObjectiveEvaluator", "ObjectiveResult", "Reference",
    "WordingPopulation", "build_calibration", "fixed_constants", "load_wording", "objective_loss", "pairwise_diff",
    "parse_calibration", "parse_objective", "parse_wordings", "raw_scores", "readout_table", "same_unit", "score_on_wordings", "score_vector",
]
