"""Model-free reference predictors, and the choice of their settings on validation rows.

A trained model is worth something only if it beats the answers that need no model and the
references that know what it knows. Every reference sees only the *training* part (training
groups' answers to training questions); its settings (the map reference's ``k`` and kernel
bandwidth, the text reference's ``k``) are chosen on the *validation* part by
:func:`tune_references`, never on a test row.

* ``uniform``;
* ``train_mean``: per item, the mean of the training groups' answer distributions (a
  mean-collapsed model); ``None`` for an item no training group answered;
* ``pooled_shares`` / ``country_shares`` (individual data): the training respondents' answer
  shares of the item pooled over all respondents (Jeffreys-smoothed, +1/2 per option), and those of
  the respondent's own country where that country is in training, shrunk toward the pooled shares
  with the weight of one respondent (else the pooled shares); no answer gets probability 0;
* ``culture_map_knn`` (group data on the Inglehart–Welzel map): the mean answer of the ``k``
  training countries nearest on the map (a test country off the map, e.g. with no survey before
  ``map_before``, gets the training mean);
* ``culture_map_kernel``: every training country's answer weighted by
  ``exp(-d^2 / 2 h^2)`` of its map distance ``d``;
* ``text_knn`` (an item no training row answered, i.e. an unseen question): the same group's
  answer shares on the ``k`` training questions whose text is most similar (cosine of sentence
  embeddings) among those with the same number of options (the same answer scale); a group not
  in training gets the training groups' mean on those questions; uniform when no training
  question has that many options.

Side information: the map references use the map wave ``map_before`` (see
:mod:`pluralign.data.culture`), the same coordinates a model given ``--map-before`` sees.
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field, replace

import numpy as np

from pluralign.data.tasks import SurveyDataset, mean_distributions

#: candidate settings searched on validation
MAP_K_GRID = (1, 2, 3, 4, 5, 6, 8, 10)
BANDWIDTH_GRID = (0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0)
TEXT_K_GRID = (1, 2, 3, 5, 8, 12, 20)


@dataclass
class ReferenceSettings:
    map_k: int = 3
    map_bandwidth: float = 0.5
    text_k: int = 5
    text_encoder: str = "minilm-l6"  # a sentence encoder, or 'tfidf' (no weights needed)
    map_before: int | None = None
    chosen_on: str = "fixed"  # 'validation' once tune_references chose the values
    validation: dict = field(default_factory=dict)  # candidate -> validation EMD


# ------------------------------------------------------------------------------------ helpers
def _norm(p) -> np.ndarray:
    p = np.asarray(p, dtype=float)
    s = p.sum()
    return p / s if s > 0 else np.full(len(p), 1.0 / len(p))


def _group_item_table(train: SurveyDataset) -> dict[str, dict[str, np.ndarray]]:
    """item -> group -> that group's (normalised) answer distribution in ``train``."""
    out: dict[str, dict[str, np.ndarray]] = defaultdict(dict)
    for (g, q), p in train.human_distributions().items():
        out[q][g] = _norm(p)
    return out


def _countries(*dss) -> dict[str, str | None]:
    c: dict[str, str | None] = {}
    for ds in dss:
        for e in ds.examples:
            c.setdefault(e.group, e.profile.country)
    return c


# ------------------------------------------------------------------------------------ map
def _map_weights(test: SurveyDataset, train: SurveyDataset, before) -> dict[str, list[tuple[str, float]]] | None:
    """test group -> [(training group, map distance)], or None when the map reference does not apply."""
    if test.kind == "individual" or train.kind == "individual":
        return None
    from pluralign.data.culture import lookup, map_distance

    country = _countries(test, train)
    tg = {e.group for e in test.examples}
    on = {g for g in tg if lookup(country[g], before) is not None}
    if not on:
        return None
    cands = [g for g in {e.group for e in train.examples} if lookup(country[g], before) is not None]
    # a test country off the map (e.g. no survey before --map-before) has no neighbours: it gets the training mean
    return {g: sorted(((c, map_distance(country[g], country[c], before)) for c in cands if c != g), key=lambda t: (t[1], t[0]))
            if g in on else [] for g in tg}


def culture_map_knn(test, train, *, k: int = 3, before=None, _w=None):
    """Mean answer of the ``k`` training countries nearest on the map (None when it does not apply)."""
    if k < 1:
        return None
    w = _w if _w is not None else _map_weights(test, train, before)
    if w is None:
        return None
    table = _group_item_table(train)
    out = []
    for e in test.examples:
        cands = table.get(e.item_id, {})
        nn = [c for c, _ in w[e.group] if c in cands][:k]
        out.append(np.mean([cands[c] for c in (nn or cands)], axis=0) if cands else None)
    return out


def culture_map_kernel(test, train, *, bandwidth: float = 0.5, before=None, _w=None):
    """Every training country's answer weighted by a Gaussian kernel of its map distance."""
    w = _w if _w is not None else _map_weights(test, train, before)
    if w is None or not bandwidth > 0:
        return None
    table = _group_item_table(train)
    out = []
    for e in test.examples:
        cands = table.get(e.item_id, {})
        ws = [(cands[c], math.exp(-(d * d) / (2 * bandwidth * bandwidth))) for c, d in w[e.group] if c in cands]
        tot = sum(x for _, x in ws)
        if not ws or tot <= 0:  # off the map: the training mean; every neighbour far beyond the bandwidth: the nearest
            near = [c for c, _ in w[e.group] if c in cands][:1]
            out.append(cands[near[0]] if near else (np.mean(list(cands.values()), axis=0) if cands else None))
            continue
        out.append(sum(p * x for p, x in ws) / tot)
    return out


# ------------------------------------------------------------------------------------ text
class TextIndex:
    """Sentence embeddings of question texts (cosine similarity), computed once per text."""

    def __init__(self, encoder: str = "minilm-l6"):
        self.encoder = encoder
        self._vec: dict[str, np.ndarray] = {}
        self._tfidf = None

    def _embed(self, texts: list[str]) -> np.ndarray:
        if self.encoder == "tfidf":
            if self._tfidf is None:
                raise RuntimeError("fit the tf-idf index first")
            return self._tfidf.transform(texts).toarray()
        from pluralign.models.profile_encoder import ProfileEncoder

        enc = ProfileEncoder(self.encoder)
        return enc.encode_texts(texts).cpu().numpy().astype(float)

    def fit(self, texts) -> "TextIndex":
        texts = sorted(set(texts) - set(self._vec))
        if not texts:
            return self
        if self.encoder == "tfidf" and self._tfidf is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            self._tfidf = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit(texts)
        v = self._embed(texts)
        n = np.linalg.norm(v, axis=1, keepdims=True)
        v = v / np.where(n > 0, n, 1.0)
        self._vec.update(zip(texts, v))
        return self

    def sim(self, a: str, b: str) -> float:
        return float(self._vec[a] @ self._vec[b])


def _text_neighbours(test, train, index: TextIndex) -> dict[str, list[str]]:
    """test item -> training items with the same number of options, most similar text first."""
    index.fit([it.text for it in train.items.values()] + [it.text for it in test.items.values()])
    out = {}
    for q, it in test.items.items():
        cands = [(index.sim(it.text, t.text), tq) for tq, t in train.items.items() if t.n_options == it.n_options and tq != q]
        out[q] = [tq for _, tq in sorted(cands, key=lambda x: (-x[0], x[1]))]
    return out


def text_knn(test, train, *, k: int = 5, index: TextIndex | None = None, _nb=None):
    """The same group's answer shares on the ``k`` most similar training questions (same scale)."""
    if test.kind == "individual" or train.kind == "individual" or k < 1:
        return None
    nb = _nb if _nb is not None else _text_neighbours(test, train, index or TextIndex())
    table = _group_item_table(train)
    means = {q: np.mean(list(gs.values()), axis=0) for q, gs in table.items()}
    out = []
    for e in test.examples:
        n = test.items[e.item_id].n_options
        qs = nb.get(e.item_id, [])[:k]
        if not qs:
            out.append(np.full(n, 1.0 / n))
            continue
        rows = [table[q][e.group] if e.group in table[q] else means[q] for q in qs]
        out.append(np.mean(rows, axis=0))
    return out


# ------------------------------------------------------------------------------------ individual data
def individual_shares(test, train):
    """``pooled_shares`` and ``country_shares`` of individual data (None where not applicable)."""
    if test.kind != "individual" or train.kind != "individual":
        return None
    pooled: dict[str, np.ndarray] = {}
    by_country: dict[tuple[str, str], np.ndarray] = {}
    for e in train.examples:
        n = train.items[e.item_id].n_options
        pooled.setdefault(e.item_id, np.zeros(n))[e.answer] += 1
        by_country.setdefault((e.group, e.item_id), np.zeros(n))[e.answer] += 1
    # Jeffreys smoothing (+1/2 per option) for the pooled shares; a country's shares are shrunk toward
    # the pooled ones with the weight of one respondent, so no answer ever gets probability 0
    pooled_s = {q: (c + 0.5) / (c.sum() + 0.5 * len(c)) for q, c in pooled.items()}
    pooled_p = [pooled_s.get(e.item_id) for e in test.examples]
    country_p = [
        (by_country[(e.group, e.item_id)] + p) / (by_country[(e.group, e.item_id)].sum() + 1.0)
        if (e.group, e.item_id) in by_country and p is not None else p
        for e, p in zip(test.examples, pooled_p)
    ]
    return {"pooled_shares": pooled_p, "country_shares": country_p}


# ------------------------------------------------------------------------------------ all of them
def reference_predictions(test: SurveyDataset, train: SurveyDataset | None, settings: ReferenceSettings | None = None,
                          *, index: TextIndex | None = None) -> dict[str, list[np.ndarray | None]]:
    """Every reference that applies to ``test`` given ``train`` (see the module docstring)."""
    s = settings or ReferenceSettings()
    refs: dict[str, list[np.ndarray | None]] = {
        "uniform": [np.full(test.items[e.item_id].n_options, 1.0 / test.items[e.item_id].n_options) for e in test.examples]
    }
    if train is None or not len(train) or train is test:
        return refs
    mean = mean_distributions(train)
    refs["train_mean"] = [mean.get(e.item_id) for e in test.examples]  # None (not scored) for questions no training row answered
    ind = individual_shares(test, train)
    if ind:
        refs.update(ind)
    w = _map_weights(test, train, s.map_before)
    knn = culture_map_knn(test, train, k=s.map_k, before=s.map_before, _w=w)
    if knn is not None and any(p is not None for p in knn):
        refs["culture_map_knn"] = knn
        refs["culture_map_kernel"] = culture_map_kernel(test, train, bandwidth=s.map_bandwidth, before=s.map_before, _w=w)
    unseen = {q for q in test.items if q not in train.items}
    if unseen and test.kind != "individual":
        sub = test.subset([e for e in test.examples if e.item_id in unseen])
        tk = text_knn(sub, train, k=s.text_k, index=index or TextIndex(s.text_encoder))
        if tk is not None:
            it = iter(tk)
            refs["text_knn"] = [next(it) if e.item_id in unseen else None for e in test.examples]
    return refs


def _mean_emd(ds: SurveyDataset, preds) -> float:
    from pluralign.evaluation import metrics as M

    vals = [M.emd(p, np.asarray(e.probs, dtype=float), ds.items[e.item_id].ordinal)
            for e, p in zip(ds.examples, preds) if p is not None]
    return float(np.mean(vals)) if vals else float("inf")


def tune_references(train: SurveyDataset, val_cells: dict[str, SurveyDataset], settings: ReferenceSettings | None = None,
                    *, index: TextIndex | None = None) -> ReferenceSettings:
    """Choose the map ``k``, the kernel bandwidth and the text ``k`` by mean EMD on validation rows
    only: the map settings on the validation countries' rows (``unseen_countries``, or the whole
    validation part of a one-way country split under the key ``all``; or, under the key ``loo``,
    the training rows themselves, each training country predicted from the OTHER training
    countries: leave-one-country-out, for splits without validation countries), the text ``k`` on
    the validation questions' rows (``unseen_questions``). Ties go to the smaller value. Group data
    only; settings without validation rows stay as given."""
    s = replace(settings or ReferenceSettings(), validation={})
    vc = val_cells.get("unseen_countries") or val_cells.get("all")
    loo = vc is None and "loo" in val_cells
    if loo:  # no validation countries: leave one training country out at a time
        vc = val_cells["loo"]
    if vc is not None and vc.kind != "individual" and len(vc):
        w = _map_weights(vc, train, s.map_before)
        if w is not None:
            if loo:  # each training country predicted from the others only (its own row is never a neighbour)
                w = {g: [(c, d) for c, d in nb if c != g] for g, nb in w.items()}
            ks = {k: _mean_emd(vc, culture_map_knn(vc, train, k=k, before=s.map_before, _w=w)) for k in MAP_K_GRID}
            hs = {h: _mean_emd(vc, culture_map_kernel(vc, train, bandwidth=h, before=s.map_before, _w=w)) for h in BANDWIDTH_GRID}
            s.map_k = min(ks, key=lambda k: (ks[k], k))
            s.map_bandwidth = min(hs, key=lambda h: (hs[h], h))
            s.validation["map_k"] = {str(k): v for k, v in ks.items()}
            s.validation["map_bandwidth"] = {str(h): v for h, v in hs.items()}
            s.validation["map_rows"] = len(vc)
    vq = val_cells.get("unseen_questions")
    if vq is not None and vq.kind != "individual" and len(vq):
        idx = index or TextIndex(s.text_encoder)
        nb = _text_neighbours(vq, train, idx)
        ts = {k: _mean_emd(vq, text_knn(vq, train, k=k, _nb=nb)) for k in TEXT_K_GRID}
        s.text_k = min(ts, key=lambda k: (ts[k], k))
        s.validation["text_k"] = {str(k): v for k, v in ts.items()}
        s.validation["text_rows"] = len(vq)
    if s.validation:
        s.chosen_on = "validation"
    return s


__all__ = ["ReferenceSettings", "reference_predictions", "tune_references", "culture_map_knn", "culture_map_kernel",
           "text_knn", "TextIndex", "individual_shares", "MAP_K_GRID", "BANDWIDTH_GRID", "TEXT_K_GRID"]
