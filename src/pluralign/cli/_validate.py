"""Every option checked before any model loads or any file is written: a bad value is one
``error:`` line naming the flag (``--batch-size``, not an internal field) and the valid range or
choices, and an output that cannot be written is refused before the work starts.

Each sub-command calls :func:`validate` once with its arguments; :data:`RULES` says, per command,
what each option may hold. A ``pluralign train --config FILE`` is checked field by field too.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import Any, Callable

from pluralign._fields import DTYPES
from pluralign.errors import PluralignError
from pluralign.training.config import LABELS, SPLITS as TRAIN_SPLITS, TrainConfig

SPLITS = (*TRAIN_SPLITS, "none")


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


# --------------------------------------------------------------------------- rules
class Rule:
    """One option's constraint; ``check(value)`` returns an error message or None."""

    optional = False

    def check(self, v: Any) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


class Int(Rule):
    def __init__(self, lo: int | None = None, hi: int | None = None, optional: bool = False):
        self.lo, self.hi, self.optional = lo, hi, optional

    def check(self, v):
        if isinstance(v, bool) or not isinstance(v, int):
            return f"must be a whole number, got {v!r}"
        if self.lo is not None and v < self.lo:
            return f"must be {'a positive whole number' if self.lo == 1 else f'>= {self.lo}'}, got {v}"
        if self.hi is not None and v > self.hi:
            return f"must be <= {self.hi}, got {v}"
        return None


class Float(Rule):
    """A finite number in [lo, hi] (``open_lo`` / ``open_hi``: the bound itself excluded)."""

    def __init__(self, lo: float | None = None, hi: float | None = None, *, open_lo: bool = False, open_hi: bool = False,
                 optional: bool = False):
        self.lo, self.hi, self.open_lo, self.open_hi, self.optional = lo, hi, open_lo, open_hi, optional

    def check(self, v):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            return f"must be a number, got {v!r}"
        if not math.isfinite(v):
            return f"must be a finite number, got {v}"
        lo_bad = self.lo is not None and (v <= self.lo if self.open_lo else v < self.lo)
        hi_bad = self.hi is not None and (v >= self.hi if self.open_hi else v > self.hi)
        if lo_bad or hi_bad:
            return f"must be in {self._range()}, got {v}"
        return None

    def _range(self) -> str:
        if self.hi is None:
            return f"{'(' if self.open_lo else '['}{self.lo}, inf)" if self.lo is not None else "(-inf, inf)"
        return f"{'(' if self.open_lo else '['}{self.lo}, {self.hi}{')' if self.open_hi else ']'}"


class Choice(Rule):
    def __init__(self, choices, optional: bool = False, csv: bool = False):
        self._choices, self.optional, self.csv = choices, optional, csv

    @property
    def choices(self) -> tuple[str, ...]:
        return tuple(self._choices() if callable(self._choices) else self._choices)

    def check(self, v):
        if not isinstance(v, str):
            return f"must be one of {', '.join(self.choices)}, got {v!r}"
        parts = [x.strip() for x in v.split(",") if x.strip()] if self.csv else [v]
        if self.csv and not parts:
            return f"must name at least one of {', '.join(self.choices)}"
        bad = [p for p in parts if p not in self.choices]
        if bad:
            return f"unknown value {bad[0]!r} (valid: {', '.join(self.choices)})"
        return None


class IntList(Rule):
    """Comma-separated whole numbers >= lo."""

    def __init__(self, lo: int = 1):
        self.lo = lo

    def check(self, v):
        parts = [x.strip() for x in str(v).split(",") if x.strip()]
        if not parts:
            return "needs at least one number"
        for p in parts:
            try:
                n = int(p)
            except ValueError:
                return f"must be comma-separated whole numbers, got {p!r}"
            if n < self.lo:
                return f"values must be >= {self.lo}, got {n}"
        return None


class Bool(Rule):
    def check(self, v):
        return None if isinstance(v, bool) else f"must be true or false, got {v!r}"


class Text(Rule):
    def __init__(self, optional: bool = False):
        self.optional = optional

    def check(self, v):
        return None if isinstance(v, (str, Path)) else f"must be a string, got {v!r}"


class TextList(Rule):
    """Comma-separated names (or a list of them, from a config file or a run record). A value
    given but naming nothing (``,``, ``""``, ``[""]``) is refused: it must never read as "all"."""

    optional = True

    def check(self, v):
        if isinstance(v, str):
            names = [x for x in v.split(",") if x.strip()]
        elif isinstance(v, list) and all(isinstance(x, (str, int)) and not isinstance(x, bool) for x in v):
            if not v:
                return None  # an empty list in a config file or record: not set
            names = [x for x in v if str(x).strip()]
        else:
            return f"must be a comma-separated string or a list of names, got {v!r}"
        if not names:
            return f"names nothing ({v!r}); give at least one name, or leave the option out"
        return None


class AdapterDir(Rule):
    """An adapter folder of ``pluralign train``: its config checked field by field and its weights
    file whole (header and length) before any model loads. The error names the file."""

    optional = True

    def check(self, v):
        if not isinstance(v, (str, Path)) or not str(v).strip():
            return f"must be an adapter folder, got {v!r}"
        from pluralign.adapters.checkpoint import read_adapter_config

        read_adapter_config(v, check_weights=True)  # raises a PluralignError naming the file and field
        return None


class CacheDir(Rule):
    """A cache folder (``auto`` / ``none`` / ``''``: the default or none) that can be created and written."""

    optional = True

    def check(self, v):
        if not isinstance(v, (str, Path)):
            return f"must be a folder, 'auto' or 'none', got {v!r}"
        if str(v) in ("auto", "none", ""):
            return None
        from pluralign.io import check_writable_dir

        try:
            check_writable_dir(v)
        except PluralignError as e:
            return f"{v}: {e.message.replace('output folder', 'folder')}"
        return None


class DEVariant(Rule):
    def check(self, v):
        from pluralign.blackbox.optimizers import parse_de_variant

        try:
            parse_de_variant(v)
        except PluralignError as e:
            return e.message
        return None


class Device(Rule):
    def check(self, v):
        if not isinstance(v, str):
            return f"must be a device name, got {v!r}"
        from pluralign.models.loading import pick_device

        try:
            pick_device(v)
        except PluralignError as e:
            return e.message
        return None


class OutDir(Rule):
    optional = True


class OutFile(Rule):
    optional = True


def _eval_methods():
    from pluralign.evaluation.methods import METHODS

    return sorted(METHODS)


class FloatList(Rule):
    """Comma-separated numbers (or a list of them, from a config file)."""

    optional = True

    def check(self, v):
        parts = v if isinstance(v, list) else [x for x in str(v).split(",") if x.strip()]
        try:
            [float(x) for x in parts if not isinstance(x, bool)]
        except (TypeError, ValueError):
            return f"must be comma-separated numbers, got {v!r}"
        return None


#: ``metadata["check"]`` of a field: a rule that does more than a type, range or choice
_CHECKS: dict[str, Callable[[], Rule]] = {"device": lambda: Device(), "adapter": lambda: AdapterDir(), "de_variant": lambda: DEVariant(),
                                          "cache_dir": lambda: CacheDir(), "out_dir": lambda: OutDir(), "out_file": lambda: OutFile()}


def rule_of(s) -> Rule:
    """The rule of one setting (:class:`pluralign._fields.Setting`), from its type and metadata:
    ``check``, ``choices``, ``lo`` / ``hi`` / ``open_lo`` / ``open_hi``, ``item``."""
    m, base, optional = s.meta, s.base, s.optional
    if "check" in m:
        return _CHECKS[m["check"]]()
    if "choices" in m:
        choices = m["choices"]
        if isinstance(choices, str):  # "module:attr", a registry read when an option is checked
            mod, attr = choices.split(":")
            choices = lambda: sorted(getattr(importlib.import_module(mod), attr))  # noqa: E731
        return Choice(choices, optional=optional, csv=m.get("csv", False))
    if base is bool:
        return Bool()
    if base is int:
        return Int(m.get("lo"), m.get("hi"), optional=optional)
    if base is float:
        return Float(m.get("lo"), m.get("hi"), open_lo=m.get("open_lo", False), open_hi=m.get("open_hi", False), optional=optional)
    if base in (list, tuple):
        return FloatList() if m.get("item") is float else TextList()
    return Text(optional=optional)


def rules_from(cls) -> dict[str, Rule]:
    """A command's rules, one per setting of the config dataclass ``cls`` (flat names)."""
    from pluralign._fields import settings

    return {s.name: rule_of(s) for s in settings(cls)}


SEED = Int(0)
DEVICE = Device()
DTYPE = Choice(DTYPES)

RULES: dict[str, dict[str, Rule]] = {
    "eval": {
        "method": Choice(_eval_methods, csv=True), "split": Choice(SPLITS), "test_frac": Float(0, 1, open_lo=True, open_hi=True),
        "test_questions": TextList(), "question_test_frac": Float(0, 1, open_lo=True, open_hi=True, optional=True),
        "val_frac": Float(0, 1, open_hi=True), "map_before": Int(1900, 2100, optional=True), "map_k": Int(1, optional=True),
        "text_k": Int(1, optional=True), "part": Choice(("test", "validation")),
        "max_items": Int(1, optional=True), "k_shot": Int(0), "scoring": Choice(("next-token", "loglik")),
        "labels": Choice(LABELS), "batch_size": Int(1), "dtype": DTYPE, "device": DEVICE, "seed": SEED, "out": OutDir(),
    },
    "train": {},  # built from TrainConfig's fields below
    "generate-eval": {
        "split": Choice(("auto", "question", "profile", "country", "respondent")), "test_frac": Float(0, 1, open_lo=True, open_hi=True),
        "max_records": Int(1, optional=True), "max_new_tokens": Int(1), "batch_size": Int(1), "temperature": Float(0, open_lo=True),
        "top_p": Float(0, 1, open_lo=True), "tie_margin": Float(0, 0.5), "judge_min_mass": Float(0, 1), "seed": SEED,
        "dtype": DTYPE, "device": DEVICE, "max_length": Int(1, optional=True), "out": OutFile(),
    },
    "softprompt": {  # and the search's settings, from their fields (below)
        "knowledge": Int(0), "dtype": DTYPE, "device": DEVICE, "threads": Int(0), "out": OutDir(),
    },
    "wordassoc train": {  # and the stages' settings, from their fields (below)
        "stage": Choice(("sft", "rl", "both")), "train_cues": Int(1, optional=True), "min_responses": Int(1),
        "on_bad_row": Choice(("error", "skip")), "on_duplicate": Choice(("error", "merge")),
        "lora_r": Int(1), "dtype": DTYPE, "device": DEVICE, "threads": Int(0), "out": OutDir(),
    },
    "wordassoc eval": {  # and the generation and transfer settings, from their fields (below)
        "split": Choice(("test", "val")), "eval_cues": Int(1, optional=True), "min_responses": Int(1),
        "on_bad_row": Choice(("error", "skip")), "on_duplicate": Choice(("error", "merge")), "ks": IntList(1),
        "n_words": Int(1), "tasks": Choice(("generation", "ranking"), csv=True),
        "dtype": DTYPE, "device": DEVICE, "threads": Int(0), "out": OutFile(),
    },
    "wordassoc report": {"out": OutFile()},
    "data inspect": {"top": Int(1)},
    "compare": {"name": Choice(("folder", "method")), "out": OutFile()},
}


RULES["train"] = rules_from(TrainConfig)


def _study_rules() -> dict[str, Rule]:
    from pluralign.wordassoc.study import StudyConfig

    return rules_from(StudyConfig)


RULES["wordassoc study"] = _study_rules()


def _wordassoc_rules() -> None:
    """``wordassoc train`` / ``eval``: the rules of the options that are fields of the stage,
    generation and transfer configs, from those fields (flag names as the commands give them)."""
    from pluralign.cli._wordassoc_options import EVAL_FLAGS, TRAIN_FLAGS, eval_settings, train_settings

    for cmd, fields, order in (("wordassoc train", train_settings(), TRAIN_FLAGS), ("wordassoc eval", eval_settings(), EVAL_FLAGS)):
        rules = {**RULES[cmd], **{s.name: rule_of(s) for s in fields}}
        RULES[cmd] = {n: rules[n] for n in order if n in rules}  # checked in the flags' order


_wordassoc_rules()


def _softprompt_rules() -> dict[str, Rule]:
    from pluralign._fields import settings
    from pluralign.blackbox.config import PopulationConfig, SearchConfig, VSMConfig

    return {s.name: rule_of(s) for cls in (SearchConfig, PopulationConfig, VSMConfig) for s in settings(cls) if s.meta.get("cli", True) is not False}


RULES["softprompt"] = {**_softprompt_rules(), **RULES["softprompt"]}

# Rules added for issue 27 (set here, apart from the table above): lists that name nothing are
# refused in every command that takes them; adapters are checked before the model loads; the DE
# strategy and a trunk cache folder before any work.
for _cmd in ("eval", "generate-eval"):
    for _name in ("countries", "questions", "test_units"):
        RULES[_cmd].setdefault(_name, TextList())
for _cmd, _name in (("eval", "adapter"), ("generate-eval", "adapter")):
    RULES[_cmd][_name] = AdapterDir()


def validate(command: str, a: dict, *, skip: tuple[str, ...] = ()) -> None:
    """Check the arguments ``a`` of ``command`` against :data:`RULES`; raise one
    :class:`PluralignError` naming the flag. Outputs are checked last (writable, right kind).
    ``pluralign train --config FILE`` fields are checked first, naming the file and field."""
    rules = RULES[command]
    if command == "train" and a.get("config"):
        check_config_file(a["config"], given=_given_train_flags(a))
    outs = []
    for name, rule in rules.items():
        if name in skip or name not in a:
            continue
        v = a[name]
        if isinstance(rule, (OutDir, OutFile)):
            if v is not None:
                outs.append((name, rule, v))
            continue
        if v is None and (rule.optional or isinstance(rule, (Device, Text, TextList))):
            continue
        msg = rule.check(v)
        if msg:
            raise PluralignError(msg.replace("unknown value", f"unknown {name.replace('_', ' ')}"), field=flag(name))
    extra = _cross_checks.get(command)
    if extra:
        extra(a)
    for name, rule, v in outs:
        from pluralign.io import check_writable_dir, check_writable_file

        (check_writable_dir if isinstance(rule, OutDir) else check_writable_file)(v, field=flag(name))


def _given_train_flags(a: dict) -> set[str]:
    """``pluralign train`` arguments given on the command line (not at their flag's default): they
    win over the config file, so its values for them are not used (nor checked)."""
    from pluralign.cli._common import cli_defaults

    defaults = cli_defaults(TrainConfig)
    return {k for k, d in defaults.items() if k in a and a[k] is not None and a[k] != d and str(a[k]) != str(d)}


def check_config_file(path, given: set[str] = frozenset()) -> dict:
    """A ``pluralign train --config`` file: an object of known TrainConfig fields, each of the
    right type and range (``{"steps": "many"}`` is refused here, naming file and field). Fields
    in ``given`` (set by a flag, which wins) are only checked to be known."""
    from pluralign._fields import flatten
    from pluralign.io import read_json

    data = read_json(path)
    if not isinstance(data, dict):
        raise PluralignError("a training config must be a JSON object of TrainConfig fields", file=path)
    data = flatten(TrainConfig, data)
    known = set(TrainConfig.help())
    rules = RULES["train"]
    for k, v in data.items():
        if k not in known:
            raise PluralignError(f"unknown field (valid: {', '.join(sorted(known))})", file=path, field=k)
        rule = rules.get(k)
        if k in given:
            continue
        if rule is None or isinstance(rule, (OutDir, OutFile)):
            if k == "out" and not isinstance(v, str):
                raise PluralignError(f"must be a string, got {v!r}", file=path, field=k)
            continue
        if v is None and (rule.optional or isinstance(rule, (Device, Text, TextList))):
            continue
        if isinstance(rule, Float) and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        msg = rule.check(v)
        if msg:
            raise PluralignError(msg.replace("unknown value", f"unknown {k.replace('_', ' ')}"), file=path, field=k)
    return data


def default_save_steps(a: dict) -> int:
    """``--save-steps``, or its default scaled to the run: a fifth of ``--steps`` between 1 and
    50 (50 when ``--epochs`` sets the length), so a short run has a checkpoint to resume from."""
    if a.get("save_steps") is not None:
        return a["save_steps"]
    if a.get("epochs"):
        return 50
    return min(50, max(1, int(a.get("steps") or 100) // 5))


def _softprompt_cross(a: dict) -> None:
    if a.get("optimizer") == "de" and isinstance(a.get("pop"), int) and not a.get("baseline"):
        from pluralign.blackbox.optimizers import de_min_pop

        need = de_min_pop(a.get("de_variant") or "DE/rand/1/bin")
        if a["pop"] < need:
            raise PluralignError(f"differential evolution ({a.get('de_variant') or 'DE/rand/1/bin'}) needs a population of at "
                                 f"least {need}, got {a['pop']}", field="--pop")
    if a.get("optimizer") == "nsga2" and not a.get("baseline") and not a.get("knowledge"):
        raise PluralignError("nsga2 optimises the VSM loss and the BLEnD knowledge accuracy: give --knowledge N "
                             "(N questions for the search, up to N more held out for the before / after check)", field="--knowledge")


def _train_cross(a: dict) -> None:
    _grpo_cross(a)
    if a.get("stage") == "dpo" and not a.get("init_adapter"):
        return  # DPO may start from scratch; its own checks run later


def _grpo_cross(a: dict) -> None:
    url = a.get("judge_url")
    if url and not str(url).startswith(("http://", "https://")):
        raise PluralignError(f"must start with http:// or https://, got {url!r}", field="--judge-url")
    for r in (a.get("grpo_reward") or []) if not isinstance(a.get("grpo_reward"), str) else [a["grpo_reward"]]:
        for name in str(r).split(",") if ":" not in str(r) else [str(r)]:
            name = name.strip()
            if name and name not in ("blend-match", "blend-weighted", "judge") and ":" not in name:
                raise PluralignError(f"unknown reward {name!r} (blend-match, blend-weighted, judge, or module:function)", field="--grpo-reward")


_cross_checks: dict[str, Callable[[dict], None]] = {"softprompt": _softprompt_cross, "train": _train_cross, "generate-eval": _grpo_cross}


# --------------------------------------------------------------------------- results files (compare)
def load_result_file(path) -> dict:
    """A results JSON of ``pluralign eval`` with the fields ``compare`` reads, or one clear error
    naming the file and the missing or malformed field. NaN written by older versions is read."""
    from pluralign.io import read_json

    r = read_json(path, allow_nan=True)
    if not isinstance(r, dict):
        raise PluralignError("not a pluralign results file (expected a JSON object)", file=path)
    if not isinstance(r.get("metrics"), dict):
        raise PluralignError("not a pluralign results file (no 'metrics' object)", file=path, field="metrics")
    ds = r.get("dataset")
    if not isinstance(ds, dict) or not isinstance(ds.get("kind"), str):
        raise PluralignError("results file without its dataset kind", file=path, field="dataset")
    m = r["metrics"]
    if not isinstance(m.get("emd_by_group"), dict) or "n" not in m:
        raise PluralignError("results metrics lack 'n' or 'emd_by_group'", file=path, field="metrics")
    refs = r.get("references")
    if not isinstance(refs, dict) or not all(isinstance(v, dict) and isinstance(v.get("metrics"), dict) and "n" in v["metrics"]
                                             for v in refs.values()):
        raise PluralignError("results file without valid 'references' (uniform, train_mean)", file=path, field="references")
    return r
