"""Bring your own questionnaire: a YAML file with items and either per-group target distributions
or per-respondent answers with profiles (format: ``docs/questionnaire.md``).

.. code-block:: yaml

    pluralign: questionnaire/1
    name: my_survey
    items:
      - id: family
        text: How important is family in your life?
        options: [Very important, Rather important, Not very important, Not at all important]
        ordinal: true
    groups:
      - id: DEU
        profile: {country: Germany}
        distributions:
          family: [0.78, 0.18, 0.03, 0.01]

The whole file is validated before anything is built and every problem is reported with its line
(``my_survey.yaml, row 12, field 'options': ...``; ``row`` is the line in the file). The loader
raises one :class:`PluralignError` naming the first problem and how many more there are;
``python -m pluralign.data.loaders.yaml_survey FILE`` prints every problem on its own line.
:func:`save_questionnaire` writes a dataset back in this format (a round trip keeps it equal).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

from pluralign.data.items import SurveyItem
from pluralign.data.loaders import register_loader
from pluralign.data.profile import PROFILE_FIELDS, Profile
from pluralign.data.tasks import GroupExample, IndividualExample, SurveyDataset
from pluralign.errors import PluralignError

FORMAT = "questionnaire/1"
TOP_KEYS = ("pluralign", "name", "description", "citation", "items", "groups", "respondents")
ITEM_KEYS = ("id", "text", "options", "ordinal", "codes", "category")
GROUP_KEYS = ("id", "profile", "distributions", "n")
RESPONDENT_KEYS = ("id", "profile", "answers")
SUFFIXES = (".yaml", ".yml")


# ---------------------------------------------------------------------------------- YAML with lines
class _LineDict(dict):
    line: int = 0
    key_lines: dict
    duplicates: list


class _LineList(list):
    line: int = 0


def _loader():
    import yaml

    class LineLoader(yaml.SafeLoader):
        pass

    def construct_map(loader, node):
        data = _LineDict()
        data.line = node.start_mark.line + 1
        data.key_lines, data.duplicates = {}, []
        yield data
        for knode, vnode in node.value:
            key = loader.construct_object(knode, deep=True)
            try:
                hash(key)
            except TypeError:
                key = str(key)
            if key in data:
                data.duplicates.append((key, knode.start_mark.line + 1))
            data[key] = loader.construct_object(vnode, deep=True)
            data.key_lines[key] = vnode.start_mark.line + 1

    def construct_seq(loader, node):
        data = _LineList()
        data.line = node.start_mark.line + 1
        yield data
        data.extend(loader.construct_object(c, deep=True) for c in node.value)

    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_map)
    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_seq)
    return LineLoader


def _read_yaml(path: Path):
    import yaml

    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise PluralignError(f"cannot read the file ({e.__class__.__name__}: {e})", file=path) from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise PluralignError(f"not valid YAML: {problem}", file=path, row=mark.line + 1 if mark else None) from None


def _line(obj, key=None, default: int | None = None) -> int | None:
    if key is not None and isinstance(obj, _LineDict) and key in obj.key_lines:
        return obj.key_lines[key]
    return getattr(obj, "line", None) or default


# ---------------------------------------------------------------------------------- validation
class _Problems:
    def __init__(self, path: Path):
        self.path = path
        self.items: list[PluralignError] = []
        self.declared: set[str] = set()  # item ids given in the file, valid or not

    def add(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        self.items.append(PluralignError(message, file=self.path, row=line, field=field))

    def unknown_keys(self, d: dict, allowed, where: str) -> None:
        for k in d:
            if k not in allowed:
                self.add(f"unknown key {k!r} in {where} (allowed: {', '.join(allowed)})", line=_line(d, k), field=str(k))
        for k, ln in getattr(d, "duplicates", []):
            self.add(f"key {k!r} appears twice in {where}", line=ln, field=str(k))


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _profile(raw, probs: _Problems, where: str, line: int | None) -> Profile | None:
    if raw is None:
        return Profile()
    if not isinstance(raw, dict):
        probs.add(f"the profile of {where} must be a mapping like {{country: Germany, age: 34}}", line=line, field="profile")
        return None
    bad = [k for k in raw if k not in PROFILE_FIELDS and k != "extra"]
    for k in bad:
        probs.add(f"unknown profile field {k!r} of {where} (known: {', '.join(PROFILE_FIELDS)}; put others under 'extra')",
                  line=_line(raw, k, line), field=str(k))
    if bad:
        return None
    if "extra" in raw and not isinstance(raw["extra"], dict):
        probs.add(f"'extra' of {where} must be a mapping of attribute: value", line=_line(raw, "extra", line), field="extra")
        return None
    d = {str(k): v for k, v in raw.items()}
    if isinstance(d.get("country"), str):
        from pluralign.data.countries import country_name

        d["country"] = country_name(d["country"].strip())  # ISO3 codes become names, as in the other loaders
    try:
        return Profile.from_dict(d)
    except PluralignError as e:
        probs.add(f"{e.message} ({where})", line=_line(raw, e.field, line), field=e.field or "profile")
        return None


def _items(doc, probs: _Problems) -> dict[str, SurveyItem]:
    raw = doc.get("items")
    if raw is None:
        probs.add("no 'items' (a list of questions with id, text, options)", line=_line(doc), field="items")
        return {}
    if not isinstance(raw, list) or not raw:
        probs.add("'items' must be a non-empty list of questions", line=_line(doc, "items"), field="items")
        return {}
    items: dict[str, SurveyItem] = {}
    for k, it in enumerate(raw, start=1):
        ln = _line(it, default=_line(raw))
        if not isinstance(it, dict):
            probs.add(f"item {k} must be a mapping with id, text, options", line=ln, field="items")
            continue
        probs.unknown_keys(it, ITEM_KEYS, f"item {k}")
        qid = it.get("id")
        where = f"item {qid!r}" if qid is not None else f"item {k}"
        ok = True
        if qid is None or (isinstance(qid, str) and not qid.strip()) or isinstance(qid, (dict, list, bool)):
            probs.add(f"item {k} needs an 'id' (a short name such as q1)", line=ln, field="id")
            ok = False
        elif str(qid) in probs.declared:
            probs.add(f"item id {str(qid)!r} is used twice", line=_line(it, "id", ln), field="id")
            ok = False
        else:
            probs.declared.add(str(qid))
        text = it.get("text")
        if not isinstance(text, str) or not text.strip():
            probs.add(f"{where} needs a 'text' (the question)", line=_line(it, "text", ln), field="text")
            ok = False
        opts = it.get("options")
        if not isinstance(opts, list) or len(opts) < 2:
            probs.add(f"{where} needs 'options': a list of at least two answer labels", line=_line(it, "options", ln), field="options")
            ok = False
        else:
            if any(isinstance(o, (dict, list)) or o is None or str(o).strip() == "" for o in opts):
                probs.add(f"{where}: every option must be a non-empty label", line=_line(it, "options", ln), field="options")
                ok = False
            elif len({str(o).strip() for o in opts}) != len(opts):
                probs.add(f"{where}: an option label is repeated", line=_line(it, "options", ln), field="options")
                ok = False
        ordinal = it.get("ordinal", True)
        if not isinstance(ordinal, bool):
            probs.add(f"{where}: 'ordinal' must be true or false, got {ordinal!r}", line=_line(it, "ordinal", ln), field="ordinal")
            ok = False
        codes = it.get("codes")
        if codes is not None and (not isinstance(codes, list) or (isinstance(opts, list) and len(codes) != len(opts))
                                  or len({str(c) for c in codes}) != len(codes)):
            probs.add(f"{where}: 'codes' must be a list of distinct answer codes, one per option", line=_line(it, "codes", ln), field="codes")
            ok = False
        cat = it.get("category", "")
        if not isinstance(cat, (str, int, float)):
            probs.add(f"{where}: 'category' must be a name", line=_line(it, "category", ln), field="category")
            ok = False
        if ok:
            items[str(qid)] = SurveyItem(
                id=str(qid), text=" ".join(text.split()), options=tuple(str(o).strip() for o in opts), ordinal=ordinal,
                codes=tuple(str(c) for c in codes) if codes else (), category=str(cat or ""), source="questionnaire",
            )
    return items


def _distribution(raw, item: SurveyItem, probs: _Problems, where: str, line: int | None) -> tuple[float, ...] | None:
    if isinstance(raw, dict):  # {option label: share}
        vals = [0.0] * item.n_options
        for k, v in raw.items():
            j = _answer_index(k, item)
            if j is None:
                probs.add(f"{where}: {k!r} is not an option of {item.id} ({', '.join(item.options)})", line=_line(raw, k, line),
                          field=item.id)
                return None
            if not _is_number(v) or v < 0:
                probs.add(f"{where}: the share of {k!r} must be a number >= 0, got {v!r}", line=_line(raw, k, line), field=item.id)
                return None
            vals[j] = float(v)
    elif isinstance(raw, list):
        if len(raw) != item.n_options:
            probs.add(f"{where}: {len(raw)} shares for the {item.n_options} options of {item.id}", line=line, field=item.id)
            return None
        if not all(_is_number(v) and v >= 0 for v in raw):
            probs.add(f"{where}: shares must be numbers >= 0, got {list(raw)!r}", line=line, field=item.id)
            return None
        vals = [float(v) for v in raw]
    else:
        probs.add(f"{where}: the distribution for {item.id} must be a list of shares (one per option) or a mapping option: share",
                  line=line, field=item.id)
        return None
    total = sum(vals)
    if total <= 0:
        probs.add(f"{where}: the shares for {item.id} are all 0", line=line, field=item.id)
        return None
    return tuple(v / total for v in vals)


def _answer_index(ans, item: SurveyItem) -> int | None:
    """An answer given as option text, answer code, or 1-based option number."""
    if isinstance(ans, (dict, list)) or ans is None or isinstance(ans, bool):
        return None
    a = str(ans).strip()
    norm = [o.lower() for o in item.options]
    if a.lower() in norm:
        return norm.index(a.lower())
    if a in item.codes and list(item.codes) != [str(i + 1) for i in range(item.n_options)]:
        return item.codes.index(a)
    if isinstance(ans, int) or a.isdigit():
        k = int(a)
        if 1 <= k <= item.n_options:
            return k - 1
    return None


def _entries(doc, section: str, noun: str, keys, needs: str, probs: _Problems):
    """The valid entries of a ``groups`` / ``respondents`` list: ``(entry, line, id, where, profile)``
    for each mapping with a new, non-empty id (problems recorded for the others)."""
    raw = doc[section]
    if not isinstance(raw, list) or not raw:
        probs.add(f"'{section}' must be a non-empty list", line=_line(doc, section), field=section)
        return
    seen = set()
    for k, e in enumerate(raw, start=1):
        ln = _line(e, default=_line(raw))
        if not isinstance(e, dict):
            probs.add(f"{noun} {k} must be a mapping with id, profile, {needs}", line=ln, field=section)
            continue
        probs.unknown_keys(e, keys, f"{noun} {k}")
        eid = e.get("id")
        if eid is None or isinstance(eid, (dict, list, bool)) or not str(eid).strip():
            probs.add(f"{noun} {k} needs an 'id'", line=ln, field="id")
            continue
        eid = str(eid)
        where = f"{noun} {eid!r}"
        if eid in seen:
            probs.add(f"{noun} id {eid!r} is used twice", line=_line(e, "id", ln), field="id")
            continue
        seen.add(eid)
        yield e, ln, eid, where, _profile(e.get("profile"), probs, where, _line(e, "profile", ln))


def _groups(doc, items, probs: _Problems) -> list[GroupExample]:
    out = []
    for g, ln, gid, where, prof in _entries(doc, "groups", "group", GROUP_KEYS, "distributions", probs):
        n = g.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            probs.add(f"{where}: 'n' (respondents) must be a positive whole number, got {n!r}", line=_line(g, "n", ln), field="n")
        dists = g.get("distributions")
        if not isinstance(dists, dict) or not dists:
            probs.add(f"{where} needs 'distributions': a mapping item id: shares", line=_line(g, "distributions", ln), field="distributions")
            continue
        for key, ln2 in getattr(dists, "duplicates", []):
            probs.add(f"{where}: item {key!r} appears twice", line=ln2, field=str(key))
        for key, d in dists.items():
            qid = str(key)
            dl = _line(dists, key, _line(dists))
            if qid not in items:
                if qid not in probs.declared:  # a declared but invalid item has its own problem already
                    probs.add(f"{where}: unknown item id {qid!r} (items: {', '.join(list(items)[:20])})", line=dl, field=qid)
                continue
            p = _distribution(d, items[qid], probs, where, dl)
            if p is not None and prof is not None:
                out.append(GroupExample(group_id=gid, profile=prof, item_id=qid, probs=p,
                                        n=n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None))
    return out


def _respondents(doc, items, probs: _Problems) -> list[IndividualExample]:
    out = []
    for r, ln, rid, where, prof in _entries(doc, "respondents", "respondent", RESPONDENT_KEYS, "answers", probs):
        answers = r.get("answers")
        if not isinstance(answers, dict) or not answers:
            probs.add(f"{where} needs 'answers': a mapping item id: answer", line=_line(r, "answers", ln), field="answers")
            continue
        for key, ln2 in getattr(answers, "duplicates", []):
            probs.add(f"{where}: item {key!r} answered twice", line=ln2, field=str(key))
        for key, ans in answers.items():
            qid = str(key)
            al = _line(answers, key, _line(answers))
            if qid not in items:
                if qid in probs.declared:
                    continue
                probs.add(f"{where}: unknown item id {qid!r} (items: {', '.join(list(items)[:20])})", line=al, field=qid)
                continue
            if ans is None:  # not answered
                continue
            j = _answer_index(ans, items[qid])
            if j is None:
                it = items[qid]
                probs.add(f"{where}: answer {ans!r} is not an option of {qid} (an option text, code or number 1-{it.n_options})",
                          line=al, field=qid)
                continue
            if prof is not None:
                out.append(IndividualExample(respondent_id=rid, profile=prof, item_id=qid, answer=j))
    return out


def check_questionnaire(path: str | Path) -> tuple[SurveyDataset | None, list[PluralignError]]:
    """Read and validate ``path``: the dataset (None when there are problems) and every problem."""
    path = Path(path)
    doc = _read_yaml(path)
    probs = _Problems(path)
    if not isinstance(doc, dict):
        probs.add("the file must be a mapping with 'items' and 'groups' or 'respondents' (see docs/questionnaire.md)", line=1)
        return None, probs.items
    probs.unknown_keys(doc, TOP_KEYS, "the file")
    fmt = doc.get("pluralign")
    if fmt is not None and fmt != FORMAT:
        probs.add(f"unknown format {fmt!r} (this version reads {FORMAT!r})", line=_line(doc, "pluralign"), field="pluralign")
    name = doc.get("name", path.stem)
    if not isinstance(name, str) or not name.strip() or any(c in name for c in "/\\:"):
        probs.add(f"'name' must be a short name without / \\ or :, got {name!r}", line=_line(doc, "name"), field="name")
        name = path.stem
    items = _items(doc, probs)
    has_g, has_r = "groups" in doc, "respondents" in doc
    examples: list = []
    kind = "distributional"
    if has_g and has_r:
        probs.add("give either 'groups' (target distributions) or 'respondents' (answers), not both", line=_line(doc, "respondents"),
                  field="respondents")
    elif not has_g and not has_r:
        probs.add("no 'groups' (per-group target distributions) and no 'respondents' (per-respondent answers)", line=_line(doc),
                  field="groups")
    elif has_g:
        examples = _groups(doc, items, probs)
    else:
        kind = "individual"
        examples = _respondents(doc, items, probs)
    if not probs.items and not examples:
        probs.add("no answers at all", line=_line(doc), field="groups" if has_g else "respondents")
    if probs.items:
        return None, probs.items
    meta = {k: str(doc[k]) for k in ("citation", "description") if k in doc}
    ds = SurveyDataset.from_examples(name.strip(), kind, items, examples, source=str(path), meta=meta)
    unused = [q for q in items if q not in ds.items]
    if unused:
        ds.items.update({q: items[q] for q in unused})  # keep the questionnaire's items even if unanswered
        ds.meta["unanswered_items"] = unused
    return ds, []


def _detect(p: Path) -> bool:
    return p.is_file() and p.suffix.lower() in SUFFIXES


@register_loader("questionnaire", detect=_detect,
                 help="your own questionnaire (YAML: items + per-group distributions or per-respondent answers; docs/questionnaire.md)")
def load_questionnaire(path: Path | None = None) -> SurveyDataset:
    """Load a questionnaire YAML; one error naming the first problem (and how many more)."""
    if path is None:
        raise PluralignError("pass the questionnaire file, e.g. questionnaire:my_survey.yaml (format: docs/questionnaire.md)")
    path = Path(path)
    if not path.exists():
        raise PluralignError("no such file", file=path)
    ds, problems = check_questionnaire(path)
    if problems:
        first = problems[0]
        if len(problems) > 1:
            rest = "; ".join(f"row {p.row}: {p.message}" if p.row else p.message for p in problems[1:4])
            more = f" (and {len(problems) - 1} more problem{'s' if len(problems) > 2 else ''}: {rest}"
            more += "; ..." if len(problems) > 4 else ""
            more += f"; list them all with: python -m pluralign.data.loaders.yaml_survey {path})"
            raise PluralignError(first.message + more, file=first.file, row=first.row, field=first.field)
        raise first
    return ds


# ---------------------------------------------------------------------------------- writing
def questionnaire_dict(ds: SurveyDataset) -> dict[str, Any]:
    """``ds`` as a questionnaire mapping (the inverse of :func:`load_questionnaire`)."""
    items = []
    for it in ds.items.values():
        d: dict[str, Any] = {"id": it.id, "text": it.text, "options": list(it.options), "ordinal": bool(it.ordinal)}
        if list(it.codes) != [str(i + 1) for i in range(it.n_options)]:
            d["codes"] = list(it.codes)
        if it.category:
            d["category"] = it.category
        items.append(d)
    doc: dict[str, Any] = {"pluralign": FORMAT, "name": ds.name, "items": items}
    for k in ("citation", "description"):
        if ds.meta.get(k):
            doc[k] = ds.meta[k]
    if ds.kind == "distributional":
        groups: dict[str, dict] = {}
        for e in ds.examples:
            g = groups.setdefault(e.group_id, {"id": e.group_id, "profile": e.profile.to_dict(), "distributions": {}})
            if e.n:
                g["n"] = int(e.n)
            g["distributions"][e.item_id] = [float(x) for x in e.probs]
        doc["groups"] = list(groups.values())
    else:
        resp: dict[str, dict] = {}
        for e in ds.examples:
            r = resp.setdefault(e.respondent_id, {"id": e.respondent_id, "profile": e.profile.to_dict(), "answers": {}})
            r["answers"][e.item_id] = ds.items[e.item_id].options[e.answer]
        doc["respondents"] = list(resp.values())
    return doc


def save_questionnaire(ds: SurveyDataset, path: str | Path) -> Path:
    """Write ``ds`` as a questionnaire YAML (atomically)."""
    import yaml

    from pluralign.io import atomic_write_text

    text = yaml.safe_dump(questionnaire_dict(ds), sort_keys=False, allow_unicode=True, width=120)
    return atomic_write_text(path, text)


def main(argv: list[str] | None = None) -> int:
    """``python -m pluralign.data.loaders.yaml_survey FILE...``: every problem, one line each."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print("usage: python -m pluralign.data.loaders.yaml_survey FILE.yaml ...", file=sys.stderr)
        return 2
    bad = 0
    for f in argv:
        try:
            ds, problems = check_questionnaire(f)
        except PluralignError as e:
            ds, problems = None, [e]
        for p in problems:
            print(f"error: {p}")
        if ds is not None:
            print(f"{f}: ok ({ds.kind}, {len(ds.items)} items, {len(ds)} answers, {len(ds.groups())} groups)")
        bad += bool(problems)
    return 2 if bad else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
