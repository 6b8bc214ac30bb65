"""Run folders as the analyses read them.

A *run* is a folder written by the pluralign commands:

* a training run (``pluralign train --out RUN``): ``train_config.json``, ``split.json``,
  ``log.jsonl``, ``train_summary.json``, ``adapter/``, and usually ``eval/`` from
  ``pluralign eval --adapter RUN/adapter --out RUN/eval``;
* an evaluation folder (``pluralign eval --out DIR``): ``eval-*.json``, ``summary.json``;
* a soft-prompt search (``pluralign softprompt --out DIR``): ``results.json``, ``log.jsonl``;
* word-association evaluations (``pluralign wordassoc eval --out FILE.json``) lying in the folder.

:func:`open_run` finds what a folder holds; a missing folder, or a run without evaluation results
where an analysis needs them, is one :class:`PluralignError` naming the path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from pluralign.errors import PluralignError
from pluralign.io import read_json, read_text


def record_file(adapter: Path) -> Path:
    """The record file of an adapter folder (see :func:`pluralign.adapters.checkpoint.record_file`)."""
    from pluralign.adapters.checkpoint import record_file as rf  # lazy: importing adapters loads torch

    return rf(adapter)


@dataclass
class Run:
    path: Path  # the folder as given
    root: Path  # the run's own folder (the training run when ``path`` is its eval/ folder)
    name: str
    eval_dir: Path | None = None
    eval_files: list[Path] = field(default_factory=list)
    train_config: dict | None = None
    split: dict | None = None
    train_summary: dict | None = None
    log: list[dict] = field(default_factory=list)
    log_file: Path | None = None
    adapter: Path | None = None
    eval_summary: dict | None = None
    softprompt: dict | None = None
    wordassoc: list[tuple[Path, dict]] = field(default_factory=list)
    _results: list[dict] | None = None

    # ------------------------------------------------------------------ evaluation results
    def results(self) -> list[dict]:
        """The evaluation results (``eval-*.json``), each checked to be a pluralign results file."""
        if self._results is None:
            self._results = [load_eval_result(f) for f in self.eval_files]
        return self._results

    def labelled_results(self) -> list[tuple[str, Path, dict]]:
        """``(label, file, result)``: the label is the run name, plus ``:method`` when the run has
        results of several methods or read-outs."""
        from pluralign.evaluation.report import readout_suffix

        res = self.results()
        out = []
        for f, r in zip(self.eval_files, res):
            lab = self.name if len(res) == 1 else f"{self.name}:{r.get('method', '?')}{readout_suffix(r)}"
            out.append((lab, f, r))
        return out

    @property
    def method(self) -> str | None:
        for src in (self.train_config, (self.adapter_meta() or {})):
            if src and src.get("method"):
                return str(src["method"])
        return None

    def adapter_meta(self) -> dict | None:
        if self.adapter is None:
            return None
        f = record_file(self.adapter)
        return read_json(f) if f.exists() else None

    def model_name(self) -> str | None:
        """The backbone the run was trained / evaluated on."""
        if self.train_config and self.train_config.get("model"):
            return str(self.train_config["model"])
        meta = self.adapter_meta()
        if meta and meta.get("base_model"):
            return str(meta["base_model"])
        if self.eval_files:
            return self.results()[0].get("model")
        return None

    def split_record(self) -> dict | None:
        """How the run's data were selected and split: ``split.json``, else the adapter's record,
        else the first evaluation result's ``split``."""
        if self.split:
            return dict(self.split, _file=str(self.root / "split.json"))
        meta = self.adapter_meta() or {}
        rec = (meta.get("extra") or {}).get("split")
        if isinstance(rec, dict):
            return dict(rec, _file=str(record_file(self.adapter)))
        if self.eval_files:
            r = self.results()[0]
            if isinstance(r.get("split"), dict) and r["split"].get("data"):
                return dict(r["split"], _file=str(self.eval_files[0]))
        return None


def load_eval_result(path: Path) -> dict:
    r = read_json(path, allow_nan=True)
    if not isinstance(r, dict) or not isinstance(r.get("metrics"), dict):
        raise PluralignError("not a pluralign results file (no 'metrics' object)", file=path, field="metrics")
    ds = r.get("dataset")
    if not isinstance(ds, dict) or ds.get("kind") not in ("individual", "distributional"):
        raise PluralignError("results file without its dataset kind", file=path, field="dataset")
    return r


def read_jsonl(path: Path) -> list[dict]:
    rows = []
    for i, line in enumerate(read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            v = json.loads(line)
        except json.JSONDecodeError as e:
            raise PluralignError(f"invalid JSON line ({e.msg})", file=path, row=i) from None
        if isinstance(v, dict):
            rows.append(v)
    return rows


def _eval_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.glob("eval-*.json") if f.is_file())


def open_run(path, *, need_eval: bool = True) -> Run:
    """Read the run folder ``path``. ``need_eval``: refuse a run without ``eval-*.json`` results."""
    path = Path(path)
    if not path.exists():
        raise PluralignError("no such run folder", file=path)
    if not path.is_dir():
        raise PluralignError("not a folder (give a run folder: pluralign train --out / pluralign eval --out)", file=path)
    eval_dir = None
    root = path
    if _eval_files(path):
        eval_dir = path
        if path.name == "eval" and any((path.parent / f).exists() for f in ("train_config.json", "split.json", "adapter")):
            root = path.parent
    elif (path / "eval").is_dir() and _eval_files(path / "eval"):
        eval_dir = path / "eval"
    else:
        subs = sorted(d for d in path.iterdir() if d.is_dir() and _eval_files(d))
        if subs:
            eval_dir = subs[0]
    name = (root.parent.name if root.name == "eval" and root.parent.name else root.name) or str(root)
    run = Run(path=path, root=root, name=name, eval_dir=eval_dir, eval_files=_eval_files(eval_dir) if eval_dir else [])
    for attr, fname in (("train_config", "train_config.json"), ("split", "split.json"), ("train_summary", "train_summary.json")):
        f = root / fname
        if f.exists():
            v = read_json(f, allow_nan=True)
            setattr(run, attr, v if isinstance(v, dict) else None)
    if (root / "log.jsonl").exists():
        run.log_file = root / "log.jsonl"
        run.log = read_jsonl(root / "log.jsonl")
    if (root / "adapter").is_dir() and record_file(root / "adapter").exists():
        run.adapter = root / "adapter"
    if eval_dir is not None and (eval_dir / "summary.json").exists():
        s = read_json(eval_dir / "summary.json", allow_nan=True)
        run.eval_summary = s if isinstance(s, dict) else None
    if (root / "results.json").exists():
        s = read_json(root / "results.json", allow_nan=True)
        if isinstance(s, dict) and ("search" in s or "naive" in s):
            run.softprompt = s
    for f in sorted(root.glob("*.json")):
        if f.name in ("train_config.json", "split.json", "train_summary.json", "results.json", "summary.json"):
            continue
        try:
            v = read_json(f, allow_nan=True)
        except PluralignError:
            continue
        if isinstance(v, dict) and str(v.get("schema", "")).startswith("pluralign.wordassoc.eval"):
            run.wordassoc.append((f, v))
    if need_eval and not run.eval_files:
        raise PluralignError(
            "no evaluation results (eval-*.json) in this run folder; run `pluralign eval --adapter RUN/adapter --out RUN/eval` first",
            file=path,
        )
    return run


def open_runs(paths, *, need_eval: bool = True) -> list[Run]:
    if not paths:
        raise PluralignError("give at least one run folder")
    runs = [open_run(p, need_eval=need_eval) for p in paths]
    seen: dict[str, int] = {}
    for r in runs:  # two runs of the same folder name (runs/a/eval, runs/b/eval): parent/name
        seen[r.name] = seen.get(r.name, 0) + 1
    for r in runs:
        if seen[r.name] > 1:
            r.name = f"{r.root.parent.name}/{r.root.name}"
    return runs


# --------------------------------------------------------------------------- rebuilding the data
def rebuild_split(rec: dict):
    """``(dataset, split)`` of a split record (``split.json``, an adapter's record or a results
    file's ``split``): the same selection, profile enrichment and deterministic split that
    training and evaluation made."""
    from pluralign.data import load_dataset, split_dataset
    from pluralign.data.splits import resolve_auto_split

    file = rec.get("_file")
    try:
        data = str(rec["data"])
        by = str(rec["by"])
    except KeyError as e:
        raise PluralignError(f"split record without {e}", file=file) from None
    ds = load_dataset(data)
    countries = [str(x) for x in rec.get("countries") or []]
    questions = [str(x) for x in rec.get("questions") or []]
    if countries or questions:
        ds = ds.filter(countries=countries or None, questions=questions or None)
    if rec.get("enrich_profile"):
        from pluralign.data.culture import enrich_dataset

        ds = enrich_dataset(ds)
    if by == "auto":
        by = resolve_auto_split(ds.kind)
    sp = split_dataset(ds, by, test_frac=float(rec.get("test_frac", 0.2)), seed=int(rec.get("seed", 0)),
                       test_units=[str(x) for x in rec.get("test_units") or []] or None)
    return ds, sp


def prompt_config(run: Run):
    """The :class:`EvalConfig` of the prompts the run's adapter was trained and evaluated with
    (method, option labels, chat template)."""
    from pluralign.evaluation.runner import EvalConfig

    rec = run.split_record() or {}
    tc = run.train_config or {}
    method = rec.get("eval_method") or rec.get("method")
    if method is None and "profile_prompt" in tc:
        method = "persona" if tc["profile_prompt"] else "vanilla"
    if method is None and run.eval_files:
        method = run.results()[0].get("method")
    labels = rec.get("labels") or tc.get("labels") or "auto"
    ct = rec.get("chat_template", tc.get("chat_template", True))
    return EvalConfig(method=method or "persona", labels=labels, chat_template=None if ct in (None, True) else False)


__all__ = ["Run", "open_run", "open_runs", "load_eval_result", "read_jsonl", "rebuild_split", "prompt_config"]
