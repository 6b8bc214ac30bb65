"""One evaluation run, end to end: :func:`evaluate_run` (``pluralign eval``), the counterpart of
:func:`pluralign.training.train`.

    from pluralign.evaluation.run import EvalRunConfig, evaluate_run
    res = evaluate_run(EvalRunConfig(model="smollm2-135m", adapter="runs/cuma/adapter", out="runs/cuma/eval"))
    res.summary["table"]

A run: replay the held-out split (of ``split_from``, else of the adapter's own run, else from the
selection settings), refuse a selection whose test rows the adapter was trained on or a prompt
format it was not trained with, load the model (with the adapter or soft prompt), score every
method x read-out x cell with :func:`pluralign.evaluation.runner.evaluate`, and write the results
JSON per method, ``summary.json`` and ``summary.png`` into ``out`` as one set (staged, swapped in
at the end: the old files or the new set, never a mix). Progress notes go to stderr; bad input
raises :class:`~pluralign.errors.PluralignError` naming the setting.

A training run's record of its split and prompt format (``split.json`` of the run folder, and
``extra.split`` of the adapter's record) is read by :func:`read_split_record` and
:func:`adapter_run_record`, which ``pluralign serve`` and ``generate-eval`` use too.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pluralign._fields import helpfield, shared_field
from pluralign.errors import PluralignError

#: run settings a training run's split record sets (setting -> record key)
SELECTION = {"data": "data", "split": "by", "test_frac": "test_frac", "seed": "seed", "test_units": "test_units", "countries": "countries",
             "questions": "questions", "test_questions": "test_questions", "question_test_frac": "question_test_frac", "val_frac": "val_frac"}
#: run settings of the prompt format a training run records (setting -> record key)
PROMPT_FORMAT = {"method": "eval_method", "labels": "labels", "chat_template": "chat_template", "enrich_profile": "enrich_profile",
                 "map_before": "map_before"}
#: settings holding a list of units (a comma-separated string is accepted too)
LIST_ARGS = ("test_units", "countries", "questions", "test_questions")

_f = helpfield


@dataclass
class EvalRunConfig:
    """Every setting of one evaluation run (the options of ``pluralign eval``, same names and defaults).

    The list settings (``test_units``, ``countries``, ``questions``, ``test_questions``) take a list
    or a comma-separated string. ``explicit``: the settings the caller chose; the others may be set
    from the adapter's run or ``split_from`` (None: every setting that differs from its default)."""

    model: str = shared_field("model")
    data: str = _f("wvs-shares", "Dataset: a loader name (wvs-shares, wvs-probe, ...), name:path, or a path.")
    strict: bool = _f(False, "Fail on the first unusable cell of the data (default: skip it and count it per reason, reported as dataset.dropped); for loaders that skip cells.", flag="--strict")
    method: str = _f("vanilla,persona", "Comma-separated prompting methods: vanilla, persona, fewshot.")
    split: str = _f("auto", "Hold-out unit: respondent, question, country, profile, country,question (two-way: three cells), none; auto = respondent for individual data, country for group data.")
    test_units: Any = _f(None, "Comma-separated units for the test part (e.g. USA,CHN,DEU for --split country or country,question); default: a hashed --test-frac.")
    test_frac: float = _f(0.2, "Fraction of units held out for testing when --test-units is not given (two-way split: of countries).")
    test_questions: Any = _f(None, "Two-way split: comma-separated test question ids (default: a hashed --question-test-frac).")
    question_test_frac: float | None = _f(None, "Two-way split: fraction of questions held out (default: --test-frac).")
    val_frac: float = _f(0.0, "Fraction of units kept for validation (both axes of the two-way split): the references' settings are chosen there. Default with --adapter: as the adapter's run.")
    part: str = _f("test", "The held-out part scored: test, or validation (the split's validation rows, by cell on a two-way split; needs --val-frac > 0) to choose a training setting without touching a test row. On the validation part the references are tuned on the rows they are scored on: compare model rows there, not references.")
    countries: Any = _f(None, "Restrict the dataset to these countries (ISO3 codes or names) before splitting.")
    questions: Any = _f(None, "Restrict to these question ids (comma-separated).")
    max_items: int | None = _f(None, "Keep N test questions spread evenly over the questionnaire (quick runs).")
    k_shot: int = _f(3, "Demonstrations for the fewshot method.")
    scoring: str = _f("next-token", "next-token: one forward pass, label-token probabilities; loglik: full option-text log-likelihood.")
    labels: str = _f("auto", "Option labels: auto (digits up to 9 options, else letters), digits, letters.")
    chat_template: bool = shared_field("chat_template", help="Use the model's chat template (a plain System/User/Assistant format when off).")
    batch_size: int = shared_field("batch_size", 16, help="Prompts per forward pass.")
    dtype: str = shared_field("dtype")
    device: str = shared_field("device")
    adapter: Path | None = _f(None, "A trained adapter folder (pluralign train) to apply to the model.")
    split_from: Path | None = _f(None, "A training run folder (pluralign train --out): rebuild its data selection, held-out split and prompt format from its split.json (--data, --split, --test-units, --test-frac, --countries, --questions, --seed, --method, --labels, --chat-template; flags given explicitly win). Default with --adapter: the adapter's own run.")
    soft_prompt: Path | None = _f(None, "A soft prompt (pluralign softprompt) to prepend.")
    seed: int = _f(0, "Seed of the split and of demonstration sampling.")
    enrich_profile: bool = _f(False, "Country profiles also carry their Inglehart-Welzel cultural-map position and zone (in the persona text); default with --adapter: as the adapter's run.", flag="--enrich-profile/--no-enrich-profile")
    map_k: int | None = _f(None, "Training countries averaged by the cultural-map nearest-neighbour reference (culture_map_knn). Default: chosen on the validation countries (--val-frac), or leave-one-training-country-out on a country split without them, else 3.")
    text_k: int | None = _f(None, "Training questions averaged by the text-similarity reference of unseen questions (text_knn). Default: chosen on the validation questions, else 5.")
    text_encoder: str = _f("minilm-l6", "Question-text encoder of the text-similarity reference: a sentence encoder (minilm-l6, hub id, folder) or tfidf.")
    map_before: int | None = _f(None, "Cultural-map wave of --enrich-profile and the map references: each country's latest coordinates from a survey year before this one (e.g. 2017 for WVS-7 data). Default with --adapter: as the adapter's run; else the latest.")
    readout: str = _f("logprob", "How the answer distribution is read, comma-separated for several: logprob (option-label probabilities), verbalized (the model writes a JSON of percentages per option; unparseable replies are counted and not scored), sampled (--samples answers at temperature 1, histogram).")
    samples: int = _f(8, "Answers sampled per prompt for --readout sampled.")
    bootstrap: int = _f(1000, "Bootstrap replicates (seeded with --seed) for the intervals over groups and questions; 0 = no intervals.")
    reference_data: str | None = _f(None, "Compute the references (train_mean, ...) and fewshot demonstrations from this dataset instead of the training part of --data (zero-shot: test groups from another source). Items are matched by id, else by question text and option count.")
    out: Path = _f(Path("runs/eval"), "Output folder: one results JSON per method, summary.json, summary.png.")
    plot: bool = _f(True, "Write summary.png.", flag="--plot/--no-plot")
    progress: bool = shared_field("progress", flag="--progress/--no-progress")
    explicit: Any = _f(None, "Names of the settings the caller chose (a flag given on the command line); the others may be set from the adapter's run or split_from. None: every setting that differs from its default.", cli=False)

    def chosen(self) -> set[str]:
        """The settings the caller chose (``explicit``, else those that differ from their default)."""
        if self.explicit is not None:
            return set(self.explicit)
        return {f.name for f in fields(self) if f.name != "explicit" and getattr(self, f.name) != _default(f)}

    def validate(self) -> "EvalRunConfig":
        """The checks of the run's own settings (``pluralign eval`` checks every flag's range before)."""
        if self.scoring not in ("next-token", "loglik"):
            raise PluralignError(f"unknown scoring {self.scoring!r} (next-token | loglik)", field="scoring")
        _check_readouts(self.readout, self.samples, self.bootstrap)
        return self


def _default(f):
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@dataclass
class EvalRunResult:
    """What :func:`evaluate_run` wrote and what it prints: ``summary`` (as ``summary.json``),
    ``results`` (one results dict per method x read-out x cell, as written), ``paths`` (their
    files under ``out``), ``tables`` (cell -> (header, rows, difference header, difference rows,
    warnings); cell None on a one-way split), the reference settings used and the read-out agreement."""

    out: Path
    summary: dict
    results: list
    paths: list
    tables: dict
    reference_settings: Any
    readout_agreement: list


def _note(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- a training run's record
def split_csv(s: str | list | None) -> list[str] | None:
    """A comma-separated setting as a list; a list (a run record's units, which may hold commas, such
    as profile keys with "Greek, Modern") is kept as it is."""
    if isinstance(s, (list, tuple)):
        return [str(x) for x in s] or None
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def normalise_split_record(rec, file, extra: dict | None = None) -> dict:
    """A run's split record (split.json, or ``extra.split`` of an adapter) with typed fields; the
    prompt format falls back to the adapter's ``extra`` (train_config, eval_method) for old runs.
    ``kind`` is the record's (``preference`` for preference / prompt data; None for survey runs)."""
    extra = extra or {}
    tc = extra.get("train_config") if isinstance(extra.get("train_config"), dict) else {}
    if not isinstance(rec, dict):
        raise PluralignError("malformed split record (not an object)", file=file)
    try:
        out = {
            "data": str(rec["data"]), "by": str(rec["by"]), "test_frac": float(rec["test_frac"]), "seed": int(rec["seed"]),
            "test_units": [str(x) for x in rec.get("test_units") or []],
            "countries": [str(x) for x in rec.get("countries") or []],
            "questions": [str(x) for x in rec.get("questions") or []],
            "test_questions": [str(x) for x in rec.get("test_questions") or []],
            "question_test_frac": None if rec.get("question_test_frac") is None else float(rec["question_test_frac"]),
            "val_frac": float(rec.get("val_frac") or 0.0),
        }
    except (KeyError, TypeError, ValueError) as e:
        raise PluralignError(f"malformed split record ({e})", file=file) from None
    method = rec.get("eval_method") or extra.get("eval_method")
    if method is None and "profile_prompt" in tc:
        method = "persona" if tc["profile_prompt"] else "vanilla"
    out["eval_method"] = method
    out["labels"] = rec.get("labels", tc.get("labels"))
    out["chat_template"] = rec.get("chat_template", tc.get("chat_template"))
    out["enrich_profile"] = bool(rec.get("enrich_profile", tc.get("enrich_profile", False)))
    out["map_before"] = rec.get("map_before", tc.get("map_before"))
    out["kind"] = rec.get("kind")
    out["file"] = str(file)
    return out


def read_split_record(folder, *, field: str = "split_from") -> dict:
    """The split record of the training run folder ``folder`` (its ``split.json``, normalised);
    ``field``: the setting named when there is none."""
    from pluralign.io import read_json

    f = Path(folder) / "split.json"
    if not f.exists():
        raise PluralignError("no split.json in this folder (is it a `pluralign train` output?)", file=folder, field=field)
    return normalise_split_record(read_json(f), f)


def adapter_run_record(adapter) -> dict | None:
    """The split and prompt format of the run that trained ``adapter``: ``extra.split`` of its
    record (``adapters.checkpoint.record_file``), else the run folder's (the adapter's parent)
    split.json; None if neither."""
    from pluralign.adapters.checkpoint import record_file
    from pluralign.io import read_json

    cfg_file = record_file(adapter)
    extra = {}
    if cfg_file.exists():
        meta = read_json(cfg_file)
        extra = (meta.get("extra") if isinstance(meta, dict) else None) or {}
        if isinstance(extra.get("split"), dict):
            return normalise_split_record(extra["split"], cfg_file, extra)
    f = Path(adapter).parent / "split.json"
    if f.exists():
        return normalise_split_record(read_json(f), f, extra)
    return None


def _arg_value(name: str, v):
    """A record value in the form of the setting ``name``."""
    if name in LIST_ARGS:
        return [str(x) for x in v] or None  # a list, never re-joined: a unit may contain a comma
    return v


def apply_record(a: dict, rec: dict, explicit: set, fields: dict) -> list[str]:
    """Set the settings of ``fields`` the caller did not choose from ``rec``; returns the names of
    chosen settings that differ from the record."""
    differ = []
    for arg, key in fields.items():
        if key not in rec or rec[key] is None:
            continue
        want = _arg_value(arg, rec[key])
        if arg in explicit:
            have = a[arg]
            if arg in LIST_ARGS:
                have = split_csv(have)
            if have != want:
                differ.append(arg)
        else:
            a[arg] = want
    return differ


def _row_key(e, with_respondent: bool) -> tuple:
    return (e.group, e.item_id, getattr(e, "respondent_id", None)) if with_respondent else (e.group, e.item_id)


def trained_rows_in(test, rec: dict, loaded: dict) -> int:
    """How many rows of ``test`` the run of ``rec`` trained on: the run's split is rebuilt and the
    test rows' (group, item[, respondent]) keys are looked up among its training rows."""
    from pluralign.data import load_dataset, split_dataset

    ds = loaded.get(rec["data"]) or load_dataset(rec["data"])
    if rec["countries"] or rec["questions"]:
        ds = ds.filter(countries=rec["countries"] or None, questions=rec["questions"] or None)
    sp = split_dataset(ds, rec["by"], test_frac=rec["test_frac"], seed=rec["seed"], test_units=rec["test_units"] or None,
                       val_frac=rec.get("val_frac", 0.0), test_questions=rec.get("test_questions") or None,
                       question_test_frac=rec.get("question_test_frac"))
    both = ds.kind == "individual" and test.kind == "individual"
    trained = {_row_key(e, both) for e in sp.train.examples}
    return sum(_row_key(e, both) in trained for e in test.examples)


def _check_prompt_format(a: dict, methods: list[str], test, rec: dict, explicit: set) -> None:
    """Refuse option labels or a method other than those the adapter was trained with; warn on
    another chat-template setting."""
    from pluralign.evaluation.scoring import option_labels

    where = f"the adapter's run ({rec['file']})"
    if rec.get("labels") and a["labels"] != rec["labels"]:
        for n in sorted({it.n_options for it in test.items.values()}):
            if option_labels(n, a["labels"]) != option_labels(n, rec["labels"]):
                raise PluralignError(
                    f"--labels {a['labels']} gives other option labels than {where} was trained with ({rec['labels']}: "
                    f"{','.join(option_labels(n, rec['labels']))} for {n} options); its scores would be meaningless",
                    field="labels",
                )
    if rec.get("eval_method") and "method" in explicit:
        other = [m for m in methods if m != rec["eval_method"]]
        if other:
            raise PluralignError(
                f"the adapter was trained on {rec['eval_method']} prompts; --method {','.join(other)} scores prompts it never "
                f"saw (use --method {rec['eval_method']}, or drop --adapter to evaluate the base model)",
                field="method",
            )
    if rec.get("chat_template") is not None and bool(a["chat_template"]) != bool(rec["chat_template"]):
        _note(
            f"warning: {where} was trained {'with' if rec['chat_template'] else 'without'} the chat template; "
            f"evaluating {'with' if a['chat_template'] else 'without'} it scores prompts it never saw"
        )


def _check_readouts(readout, samples, bootstrap) -> list[str]:
    """The read-out list; ``samples`` / ``bootstrap`` in range (one error naming the flag)."""
    from pluralign.evaluation.readouts import READOUTS

    readouts = split_csv(readout) or ["logprob"]
    for ro in readouts:
        if ro not in READOUTS:
            raise PluralignError(f"unknown value {ro!r} (valid: {', '.join(READOUTS)})", field="--readout")
    if not isinstance(samples, int) or samples < 1:
        raise PluralignError(f"must be a positive whole number, got {samples}", field="--samples")
    if not isinstance(bootstrap, int) or bootstrap < 0:
        raise PluralignError(f"must be >= 0, got {bootstrap}", field="--bootstrap")
    return list(dict.fromkeys(readouts))


def _readout_note(res: dict) -> str:
    ro = res.get("readout") or {}
    if ro.get("name") == "verbalized":
        return f"; {ro['unparseable']} of {ro['replies']} replies unparseable ({100 * ro['unparseable_frac']:.0f} %)"
    if ro.get("name") == "sampled":
        return f"; {ro['invalid_samples']} of {ro['samples'] * res['timing']['prompts']} samples named no option"
    return ""


# --------------------------------------------------------------------------- selection helpers
def spread_items(ds, n: int) -> list[str]:
    """``n`` question ids evenly spread over the dataset's items in questionnaire order."""
    import re

    ids = sorted(ds.items, key=lambda q: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", q)])
    if n >= len(ids):
        return ids
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def _norm_text(s: str) -> str:
    import re

    return re.sub(r"\W+", " ", s.lower()).strip()


def reference_dataset(test, spec: str):
    """The dataset ``spec`` with its items renamed to the ``test`` items they match (same id; else
    the same question text, case and punctuation ignored, with the same number of options), as
    the ``train`` of the references; items without a match are dropped. Returns (dataset, info)."""
    from pluralign.data import load_dataset

    ref = load_dataset(spec)
    by_text: dict[tuple[str, int], str] = {}
    for q, it in test.items.items():
        by_text.setdefault((_norm_text(it.text), it.n_options), q)
    rename: dict[str, str] = {}
    n_id = n_text = 0
    for q, it in ref.items.items():
        if q in test.items and test.items[q].n_options == it.n_options:
            rename[q] = q
            n_id += 1
        elif (_norm_text(it.text), it.n_options) in by_text:
            rename[q] = by_text[(_norm_text(it.text), it.n_options)]
            n_text += 1
    if not rename:
        raise PluralignError(
            f"none of its {len(ref.items)} items matches a test item (by id, or by question text and option count)",
            file=spec, field="reference_data",
        )
    from pluralign.data.countries import country_name

    def _country(e):
        c = e.profile.country or e.group
        return country_name(c) or c

    # the test groups' own answers never reach a reference or a demonstration (by group name or country)
    test_groups = {e.group for e in test.examples} | {_country(e) for e in test.examples}
    kept = [e for e in ref.examples if e.item_id in rename and e.group not in test_groups and _country(e) not in test_groups]
    n_test_group_rows = sum(1 for e in ref.examples if e.item_id in rename) - len(kept)
    items = {rename[q]: dataclasses.replace(it, id=rename[q]) for q, it in ref.items.items() if q in rename}
    exs = [dataclasses.replace(e, item_id=rename[e.item_id]) for e in kept]
    if not exs:
        raise PluralignError("after leaving out the test groups' own answers, nothing of it is left to compute references from",
                             file=spec, field="reference_data")
    out = type(ref)(name=ref.name, kind=ref.kind, items=items, examples=exs, source=ref.source, meta=ref.meta)
    info = {"data": spec, "name": ref.name, "kind": ref.kind, "examples": len(exs), "groups": len(out.groups()),
            "matched_items": len(set(rename.values())), "matched_by_id": n_id, "matched_by_text": n_text,
            "test_group_rows_left_out": n_test_group_rows}
    return out, info


def _reference_settings(a: dict, sp, train):
    """The references' settings: map_k / text_k as given, else chosen on the validation rows
    (two-way split: its validation cells; one-way: the whole validation part; a country split
    without validation countries: leave-one-training-country-out), else the defaults."""
    from pluralign.evaluation.references import ReferenceSettings, tune_references

    s = ReferenceSettings(map_k=a["map_k"] if a.get("map_k") is not None else 3, text_k=a["text_k"] if a.get("text_k") is not None else 5,
                          text_encoder=a.get("text_encoder") or "minilm-l6", map_before=a.get("map_before"))
    val_cells = sp.val_cells() or ({"all": sp.val} if sp.val is not None else {})
    if not val_cells and sp.by == "country" and train is not None and train.kind != "individual" and len(train):
        val_cells = {"loo": train}  # no validation countries: leave one training country out at a time
    if not val_cells or a.get("reference_data"):
        return s
    tuned = tune_references(train, val_cells, s)
    if a.get("map_k") is not None:  # explicit settings win over the validation choice
        tuned.map_k = a["map_k"]
    if a.get("text_k") is not None:
        tuned.text_k = a["text_k"]
    return tuned


def _same_data(a, b) -> bool:
    """Whether two data specs name the same data (paths compared absolute: a run records them so)."""
    from pluralign.data.fingerprint import absolute_spec

    return absolute_spec(str(a)) == absolute_spec(str(b))


# --------------------------------------------------------------------------- the run
def evaluate_run(cfg: EvalRunConfig) -> EvalRunResult:
    """Run one evaluation described by ``cfg`` (see the module docstring); returns what it wrote.

    ``cfg.soft_prompt`` (a folder of ``pluralign softprompt``, or a peft PromptTuning adapter) is
    read by :mod:`pluralign.adapters.softprompt`: checked before the model loads, then wrapped
    around it with :func:`~pluralign.adapters.softprompt.load_soft_prompt_model`."""
    from pluralign.data import load_dataset, split_dataset
    from pluralign.data.fingerprint import data_label
    from pluralign.data.splits import resolve_auto_split
    from pluralign.evaluation.methods import METHODS
    from pluralign.evaluation.report import difference_rows, readout_agreement, save_results, summary_rows, write_plot
    from pluralign.evaluation.runner import EvalConfig, evaluate
    from pluralign.io import StagedOutput, claim_output
    from pluralign.models import load_backbone

    explicit = cfg.chosen()
    a = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name != "explicit"}
    cfg.validate()
    if a["soft_prompt"]:
        from pluralign.adapters.softprompt import load_soft_prompt

        try:
            load_soft_prompt(a["soft_prompt"])  # a missing or damaged prompt fails before the model loads
        except PluralignError as e:
            if e.field is not None:
                raise
            raise PluralignError(e.message, file=e.file, row=e.row, field="soft_prompt") from None
    readouts = _check_readouts(a["readout"], a["samples"], a["bootstrap"])
    claim_output(a["out"], "eval", field="--out", create=False)  # one folder, one kind of run, one writer at a time
    # the run the adapter comes from (what it was trained on) and the run whose split is evaluated
    run_rec = adapter_run_record(a["adapter"]) if a["adapter"] else None
    sel_rec = read_split_record(a["split_from"]) if a.get("split_from") else run_rec
    fmt_rec = run_rec or sel_rec
    if sel_rec is not None and not a.get("split_from") and "data" in explicit and not _same_data(a["data"], sel_rec["data"]):
        # an adapter on NEW data (the zero-shot use): only its prompt format is replayed, not its run's split;
        # the trained-rows check below still runs, and reference_data supplies the references
        _note(f"note: --data {a['data']} is not the data of the adapter's run ({sel_rec['data']}): its prompt format "
              "is replayed, its split is not")
        sel_rec = None
    overridden: list[str] = []
    if sel_rec is not None:
        overridden = apply_record(a, sel_rec, explicit, SELECTION)
        _note(
            f"split from {sel_rec['file']}: {a['data']} by {a['split']}, test_frac {a['test_frac']}, seed {a['seed']}"
            + (f" (explicit: {', '.join('--' + o.replace('_', '-') for o in overridden)})" if overridden else "")
        )
        if a["split"] != "country,question":  # a one-way split asked for: the record's two-way settings do not apply
            for k in ("test_questions", "question_test_frac"):
                if k not in explicit:
                    a[k] = None
    if fmt_rec is not None:
        apply_record(a, fmt_rec, explicit, PROMPT_FORMAT)
    methods = split_csv(a["method"]) or ["vanilla"]
    for m in methods:
        if m not in METHODS:
            raise PluralignError(f"unknown method {m!r} (available: {', '.join(sorted(METHODS))})", field="method")
    if a["adapter"] and run_rec is None:
        _note(f"note: {a['adapter']} records no training split; cannot check that its training rows are not scored")
    full = load_dataset(a["data"], strict=True if a.get("strict") else None)
    ds = full
    if a["countries"] or a["questions"]:
        ds = ds.filter(countries=split_csv(a["countries"]), questions=split_csv(a["questions"]))
    if a.get("enrich_profile"):
        from pluralign.data.culture import enrich_dataset

        ds = enrich_dataset(ds, before=a.get("map_before"))
    by = a["split"] if a["split"] != "auto" else resolve_auto_split(ds.kind)
    sp = split_dataset(ds, by, test_frac=a["test_frac"], seed=a["seed"], test_units=split_csv(a["test_units"]),
                       val_frac=a.get("val_frac") or 0.0, test_questions=split_csv(a.get("test_questions")),
                       question_test_frac=a.get("question_test_frac"))
    test, held_cells = sp.test, sp.test_cells()
    if a.get("part") == "validation":  # choose a training setting on the validation rows; no test row is scored
        if sp.val is None or not len(sp.val):
            raise PluralignError("--part validation needs validation rows: give --val-frac > 0 (or an adapter whose run had it)",
                                 field="part")
        test, held_cells = sp.val, ({f"validation/{c}": t for c, t in sp.val_cells().items()} or {"validation": sp.val})
    if a["max_items"]:
        test = test.filter(questions=spread_items(test, a["max_items"]))
    # the test part by cell (two-way split), each scored and reported on its own
    cells = {c: (t.filter(questions=[q for q in t.items if q in test.items]) if a["max_items"] else t)
             for c, t in held_cells.items() if not a["max_items"] or set(t.items) & set(test.items)}
    trained_in_test = None
    if a["adapter"] and run_rec is not None:
        _check_prompt_format(a, methods, test, run_rec, explicit)
        trained_in_test = trained_rows_in(test, run_rec, {a["data"]: full})
        if trained_in_test:
            asked = sorted(explicit & set(SELECTION)) or overridden or (["split_from"] if a.get("split_from") else [])
            flags = ", ".join("--" + x.replace("_", "-") for x in asked) or "this selection"
            raise PluralignError(
                f"{trained_in_test} of the {len(test)} test rows were trained on by {a['adapter']} (its run: {run_rec['data']} "
                f"by {run_rec['by']}, test_frac {run_rec['test_frac']}, seed {run_rec['seed']}); {flags} would score training "
                "rows: drop it to use the run's held-out part",
                file=run_rec["file"], field=asked[0] if asked else "split",
            )
    split_info = {
        **sp.describe(),
        "data": a["data"], "test_frac": a["test_frac"], "test_units": split_csv(a["test_units"]) or [],
        "countries": split_csv(a["countries"]) or [], "questions": split_csv(a["questions"]) or [], "max_items": a["max_items"],
        "labels": a["labels"], "chat_template": bool(a["chat_template"]), "enrich_profile": bool(a.get("enrich_profile")),
        "from": "split_from" if a.get("split_from") else ("adapter" if sel_rec is not None else "flags"),
        "record": sel_rec["file"] if sel_rec is not None else None,
        "explicit": sorted(explicit & (set(SELECTION) | set(PROMPT_FORMAT))),
        "trained_rows_in_test": trained_in_test,  # None: not checked (no adapter, or it records no split)
        "test_questions": split_csv(a.get("test_questions")) or [], "question_test_frac": a.get("question_test_frac"),
        "val_frac": a.get("val_frac") or 0.0, "map_before": a.get("map_before"), "part": a.get("part") or "test",
    }
    if sp.country_part is not None:
        split_info["test_countries"] = sp.units("country", "test")
        split_info["test_question_list"] = sp.units("question", "test")
        split_info["val_countries"] = sp.units("country", "val")
        split_info["val_questions"] = sp.units("question", "val")
    _note(f"data {ds.name} ({ds.kind}): {len(ds)} examples; split by {by}: train {len(sp.train)}, test {len(test)} "
          f"({len(test.items)} items, {len(test.groups())} groups)")
    train = sp.train
    if a.get("reference_data"):
        train, ref_info = reference_dataset(test, a["reference_data"])
        split_info["reference_data"] = ref_info
        _note(f"reference data {ref_info['data']}: {ref_info['examples']} examples, {ref_info['matched_items']} of the "
              f"{len(test.items)} test items matched ({ref_info['matched_by_id']} by id, {ref_info['matched_by_text']} by text)")
    ref_settings = _reference_settings(a, sp, train)
    _note(f"loading {a['model']} ...")
    model, tok = load_backbone(a["model"], dtype=a["dtype"], device=a["device"])
    profile_kwargs = None
    if a["adapter"]:
        from pluralign.adapters import load_adapter_for_eval

        model, profile_kwargs = load_adapter_for_eval(model, a["adapter"], tokenizer=tok)
    if a["soft_prompt"]:
        from pluralign.adapters.softprompt import load_soft_prompt_model

        model = load_soft_prompt_model(model, a["soft_prompt"])
    results = []
    paths = []
    out = Path(a["out"])
    claim_output(out, "eval", field="--out")  # created and locked now that results are about to be written
    stage = StagedOutput(out)  # files go to a staging folder, swapped in at the end: old files or the new set, never a mix
    parts = cells or {None: test}
    try:
        for m in methods:
            for ro in readouts:
                ecfg = EvalConfig(
                    method=m, k_shot=a["k_shot"], batch_size=a["batch_size"], scoring=a["scoring"], labels=a["labels"],
                    chat_template=None if a["chat_template"] else False, seed=a["seed"], map_k=ref_settings.map_k,
                    map_bandwidth=ref_settings.map_bandwidth, text_k=ref_settings.text_k, text_encoder=ref_settings.text_encoder,
                    map_before=ref_settings.map_before, readout=ro, samples=a["samples"], bootstrap=a["bootstrap"],
                )
                for cell, part in parts.items():
                    res = evaluate(
                        model, tok, part, ecfg, train=train, model_name=a["model"], split=dict(split_info, method=m),
                        profile_kwargs=profile_kwargs, progress=a["progress"],
                        adapter=str(a["adapter"]) if a["adapter"] else None, references=ref_settings, cell=cell,
                    )
                    if a["soft_prompt"]:
                        res["soft_prompt"] = str(a["soft_prompt"])
                    res.setdefault("dataset", {})["dropped"] = dict(full.meta.get("dropped") or {})  # unusable cells the loader skipped
                    name = f"eval-{data_label(a['data'], ds.name)}-{m}" + ("" if ro == "logprob" else f"-{ro}") + (f"@{cell.replace('/', '-')}" if cell else "") + ".json"
                    path = out / save_results(res, stage.path / name).name
                    _note(f"{m}{'' if ro == 'logprob' else ' (' + ro + ')'}{' [' + cell + ']' if cell else ''}: wrote {path}"
                          + _readout_note(res))
                    results.append(res)
                    paths.append(str(path))
        agreement = readout_agreement(results, {q: it.ordinal for q, it in ds.items.items()})
        tables = {}
        for cell in parts:
            rs = [r for r in results if r.get("cell") == cell]
            refs = tuple(rs[0]["references"]) if rs else ("train_mean",)
            h, rws = summary_rows(rs)
            dh, drw, dw = difference_rows(rs, references=refs if (cell or rs[0]["dataset"]["kind"] == "individual") else ("train_mean",),
                                          n_boot=a["bootstrap"])  # bootstrap 0: no paired intervals either
            tables[cell] = (h, rws, dh, drw, dw)
        header, rows, dheader, drows, dwarn = tables[next(iter(parts))]
        summary = {"results": paths, "table": {"header": header, "rows": rows}, "differences": {"header": dheader, "rows": drows},
                   "reference_settings": dataclasses.asdict(ref_settings), "readout_agreement": agreement,
                   "part": a.get("part") or "test"}
        if cells:
            summary["cells"] = {c: {"table": {"header": t[0], "rows": t[1]}, "differences": {"header": t[2], "rows": t[3]}}
                                for c, t in tables.items()}
        save_results(summary, stage.path / "summary.json")
        if a["plot"]:
            _note(f"plot: {out / write_plot(results, stage.path / 'summary.png').name}")
        stage.commit()
    except BaseException:  # an error or Ctrl-C: the staging folder goes, the earlier set stays
        stage.abort()
        raise
    return EvalRunResult(out=out, summary=summary, results=results, paths=paths, tables=tables,
                         reference_settings=ref_settings, readout_agreement=agreement)


__all__ = ["EvalRunConfig", "EvalRunResult", "evaluate_run", "read_split_record", "adapter_run_record", "normalise_split_record",
           "reference_dataset", "spread_items"]
