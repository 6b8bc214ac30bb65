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
#: limits of a questionnaire file: its size, the nodes it may hold (aliases counted expanded, so a
#: kilobyte "billion laughs" file is refused instead of growing memory), the nesting depth (a real
#: file nests 6 deep), the length of one value, and the characters of one number
MAX_BYTES = 32 * 1024 * 1024
MAX_NODES = 1_000_000
MAX_DEPTH = 32
MAX_SCALAR_CHARS = 100_000
MAX_NUMBER_CHARS = 64


class _LineDict(dict):
    line: int = 0
    key_lines: dict
    duplicates: list


class _LineList(list):
    line: int = 0


class _YInt(int):
    """An integer as written in the file (``text``: ``01`` stays ``01`` where a label is meant)."""

    text: str = ""


class _YFloat(float):
    text: str = ""


class _Limit(Exception):
    """A questionnaire that breaks a limit or the YAML subset read here (message, line)."""

    def __init__(self, message: str, line: int | None):
        super().__init__(message)
        self.message, self.line = message, line


def _text(x) -> str:
    """A scalar as the file wrote it: numbers keep their digits (``01``, ``1.10``), booleans are
    ``true`` / ``false``; anything else is ``str(x)``."""
    if isinstance(x, bool):
        return "true" if x else "false"
    t = getattr(x, "text", None)
    return t if isinstance(t, str) and t else str(x)


def _plain(x):
    """``x`` with the number subclasses of this loader turned into plain int / float."""
    if isinstance(x, _YInt):
        return int(x)
    if isinstance(x, _YFloat):
        return float(x)
    return x


def _loader():
    """A SafeLoader with YAML 1.2 core-schema scalars (only ``true`` / ``false`` are booleans: ``Yes``,
    ``No``, ``NO``, ``on``, ``off`` stay strings; ``012`` is twelve; no sexagesimal numbers, dates or
    merge keys), lines recorded on every mapping and list, and the limits above enforced while the
    file is composed (depth, node count with aliases expanded, recursive aliases, value length)."""
    import re

    import yaml
    from yaml.events import AliasEvent, ScalarEvent
    from yaml.nodes import MappingNode, SequenceNode

    class LineLoader(yaml.SafeLoader):
        yaml_implicit_resolvers: dict = {}

        def __init__(self, stream):
            super().__init__(stream)
            self._depth = 0
            self._nodes = 0
            self._open: set = set()
            self._weights: dict = {}

        def _count(self, n: int, mark) -> None:
            self._nodes += n
            if self._nodes > MAX_NODES:
                raise _Limit(f"the file holds more than {MAX_NODES} values (aliases counted once per use); "
                             "split it or use a tabular format", mark.line + 1)

        def _weight(self, node) -> int:
            """Values in ``node`` with every alias inside it expanded (memoised: nodes are shared)."""
            w = self._weights.get(id(node))
            if w is None:
                w = 1
                if isinstance(node, SequenceNode):
                    w += sum(self._weight(c) for c in node.value)
                elif isinstance(node, MappingNode):
                    w += sum(self._weight(k) + self._weight(v) for k, v in node.value)
                self._weights[id(node)] = w
            return w

        def compose_node(self, parent, index):
            event = self.peek_event()
            if self.check_event(AliasEvent):
                if event.anchor in self._open:
                    raise _Limit(f"alias *{event.anchor} refers to the collection that holds it (a recursive structure)",
                                 event.start_mark.line + 1)
                if event.anchor in self.anchors:
                    self._count(self._weight(self.anchors[event.anchor]), event.start_mark)
                return super().compose_node(parent, index)
            if isinstance(event, ScalarEvent) and len(event.value) > MAX_SCALAR_CHARS:
                raise _Limit(f"a value of {len(event.value)} characters (the limit is {MAX_SCALAR_CHARS})", event.start_mark.line + 1)
            self._depth += 1
            if self._depth > MAX_DEPTH:
                raise _Limit(f"nested more than {MAX_DEPTH} levels deep", event.start_mark.line + 1)
            anchor = getattr(event, "anchor", None)
            if anchor is not None:
                self._open.add(anchor)
            try:
                node = super().compose_node(parent, index)
            finally:
                self._depth -= 1
                self._open.discard(anchor)
            self._count(1, event.start_mark)
            return node

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
            # the value's line; an alias's value lies at its anchor, before the key: then the key's line
            data.key_lines[key] = max(vnode.start_mark.line, knode.start_mark.line) + 1

    def construct_seq(loader, node):
        data = _LineList()
        data.line = node.start_mark.line + 1
        yield data
        data.extend(loader.construct_object(c, deep=True) for c in node.value)

    def _number_text(loader, node) -> str:
        value = loader.construct_scalar(node)
        if len(value) > MAX_NUMBER_CHARS:
            raise _Limit(f"a number of {len(value)} characters (the limit is {MAX_NUMBER_CHARS}); quote it if it is a label",
                         node.start_mark.line + 1)
        return value

    def construct_int(loader, node):
        text = _number_text(loader, node)
        v = text.strip()
        sign = -1 if v.startswith("-") else 1
        body = v[1:] if v[:1] in "+-" else v
        try:
            if body[:2] in ("0o", "0O"):
                n = int(body[2:], 8)
            elif body[:2] in ("0x", "0X"):
                n = int(body[2:], 16)
            elif body[:2] in ("0b", "0B"):
                n = int(body[2:], 2)
            else:
                n = int(body, 10)
        except ValueError:
            raise _Limit(f"{text!r} is not a whole number", node.start_mark.line + 1) from None
        out = _YInt(sign * n)
        out.text = text
        return out

    def construct_float(loader, node):
        text = _number_text(loader, node)
        v = text.strip().lower()
        try:
            if v in (".inf", "+.inf"):
                f = float("inf")
            elif v == "-.inf":
                f = float("-inf")
            elif v == ".nan":
                f = float("nan")
            else:
                f = float(v)
        except ValueError:
            raise _Limit(f"{text!r} is not a number", node.start_mark.line + 1) from None
        out = _YFloat(f)
        out.text = text
        return out

    # YAML 1.2 core schema (https://yaml.org/spec/1.2.2/#1032-tag-resolution)
    LineLoader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
    LineLoader.add_implicit_resolver("tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"),
                                     list("-+0123456789"))
    LineLoader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
        list("-+0123456789."))
    LineLoader.add_implicit_resolver("tag:yaml.org,2002:null", re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, construct_map)
    LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, construct_seq)
    LineLoader.add_constructor("tag:yaml.org,2002:int", construct_int)
    LineLoader.add_constructor("tag:yaml.org,2002:float", construct_float)
    return LineLoader


def _read_yaml(path: Path):
    import yaml

    try:
        size = path.stat().st_size
    except OSError as e:
        raise PluralignError(f"cannot read the file ({e.__class__.__name__}: {e.strerror or e})", file=path) from None
    if size > MAX_BYTES:
        raise PluralignError(f"the file has {size / 2**20:.1f} MiB; a questionnaire may have at most {MAX_BYTES // 2**20} MiB "
                             "(split it, or use a tabular format)", file=path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise PluralignError(f"cannot read the file ({e.__class__.__name__}: {e})", file=path) from None
    try:
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except _Limit as e:
        raise PluralignError(e.message, file=path, row=e.line) from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        raise PluralignError(f"not valid YAML: {problem}", file=path, row=mark.line + 1 if mark else None) from None
    except RecursionError:
        raise PluralignError(f"nested too deeply (at most {MAX_DEPTH} levels)", file=path) from None
    except (ValueError, TypeError, OverflowError) as e:  # a constructor on a value this loader does not expect
        raise PluralignError(f"not a questionnaire value: {e}", file=path) from None


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
        self.dups_seen: set[int] = set()  # mappings whose repeated keys are reported already

    def add(self, message: str, *, line: int | None = None, field: str | None = None) -> None:
        self.items.append(PluralignError(message, file=self.path, row=line, field=field))

    def duplicates(self, d, what) -> bool:
        """Report the keys repeated in the mapping ``d`` (``what(key)``: the message); True if any."""
        if id(d) in self.dups_seen:
            return False
        self.dups_seen.add(id(d))
        dups = getattr(d, "duplicates", [])
        for k, ln in dups:
            self.add(what(k), line=ln, field=_text(k))
        return bool(dups)

    def unknown_keys(self, d: dict, allowed, where: str) -> None:
        for k in d:
            if k not in allowed:
                self.add(f"unknown key {_text(k)!r} in {where} (allowed: {', '.join(allowed)})", line=_line(d, k), field=_text(k))
        self.duplicates(d, lambda k: f"key {_text(k)!r} appears twice in {where}")

    def leftover_duplicates(self, doc) -> None:
        """Repeated keys in any mapping no check above looked at (YAML keeps the last silently)."""
        seen: set[int] = set()
        stack = [doc]
        while stack:
            x = stack.pop()
            if id(x) in seen:
                continue
            seen.add(id(x))
            if isinstance(x, dict):
                self.duplicates(x, lambda k: f"key {_text(k)!r} appears twice in one mapping (YAML would keep only the last)")
                stack.extend(x.values())
            elif isinstance(x, list):
                stack.extend(x)


def _is_number(x) -> bool:
    if not isinstance(x, (int, float)) or isinstance(x, bool):
        return False
    try:
        return math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _is_label(x) -> bool:
    """A scalar usable as a label or id (not a mapping, list, null or empty text)."""
    return x is not None and not isinstance(x, (dict, list, tuple, set, bytes)) and _text(x).strip() != ""


def _profile(raw, probs: _Problems, where: str, line: int | None) -> Profile | None:
    if raw is None:
        return Profile()
    if not isinstance(raw, dict):
        probs.add(f"the profile of {where} must be a mapping like {{country: Germany, age: 34}}", line=line, field="profile")
        return None
    bad = [k for k in raw if k not in PROFILE_FIELDS and k != "extra"]
    for k in bad:
        probs.add(f"unknown profile field {_text(k)!r} of {where} (known: {', '.join(PROFILE_FIELDS)}; put others under 'extra')",
                  line=_line(raw, k, line), field=_text(k))
    if bad:
        return None
    dup = probs.duplicates(raw, lambda k: f"profile field {_text(k)!r} of {where} is given twice")
    if "extra" in raw and not isinstance(raw["extra"], dict):
        probs.add(f"'extra' of {where} must be a mapping of attribute: value", line=_line(raw, "extra", line), field="extra")
        return None
    if "extra" in raw:
        extra = raw["extra"]
        dup |= probs.duplicates(extra, lambda k: f"'extra' attribute {_text(k)!r} of {where} is given twice")
        folded: dict[str, object] = {}
        for k in extra:
            if not _is_label(k) or isinstance(extra[k], (dict, list)):
                probs.add(f"'extra' of {where} must map attribute names to single values", line=_line(extra, k, line), field="extra")
                return None
            key = " ".join(_text(k).split()).lower()
            if key in folded:
                probs.add(f"'extra' attributes {_text(folded[key])!r} and {_text(k)!r} of {where} differ only in case or spacing",
                          line=_line(extra, k, line), field=_text(k))
                dup = True
            folded[key] = k
    nested = [k for k, v in raw.items() if k != "extra" and isinstance(v, (dict, list))]
    for k in nested:
        probs.add(f"profile field {k!r} of {where} must be a single value, not a {'mapping' if isinstance(raw[k], dict) else 'list'}",
                  line=_line(raw, k, line), field=str(k))
    if dup or nested:
        return None
    d = {str(k): (_plain(v) if k in ("age", "income") else (_text(v) if isinstance(v, (bool, int, float)) else v))
         for k, v in raw.items() if k != "extra"}
    if "extra" in raw:
        d["extra"] = {_text(k): (None if v is None else _text(v)) for k, v in raw["extra"].items() if v is not None}
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
        where = f"item {_text(qid)!r}" if qid is not None else f"item {k}"
        ok = True
        if not _is_label(qid) or isinstance(qid, bool):
            probs.add(f"item {k} needs an 'id' (a short name such as q1)", line=ln, field="id")
            ok = False
        elif _text(qid) in probs.declared:
            probs.add(f"item id {_text(qid)!r} is used twice", line=_line(it, "id", ln), field="id")
            ok = False
        else:
            qid = _text(qid)
            probs.declared.add(qid)
        text = it.get("text")
        if not isinstance(text, str) or not text.strip():
            probs.add(f"{where} needs a 'text' (the question)", line=_line(it, "text", ln), field="text")
            ok = False
        opts = it.get("options")
        if not isinstance(opts, list) or len(opts) < 2:
            probs.add(f"{where} needs 'options': a list of at least two answer labels", line=_line(it, "options", ln), field="options")
            ok = False
        else:
            labels = [_text(o).strip() for o in opts]
            folded = [" ".join(lab.split()).lower() for lab in labels]
            if not all(_is_label(o) for o in opts):
                probs.add(f"{where}: every option must be a non-empty label", line=_line(it, "options", ln), field="options")
                ok = False
            elif len(set(labels)) != len(labels):
                probs.add(f"{where}: an option label is repeated", line=_line(it, "options", ln), field="options")
                ok = False
            elif len(set(folded)) != len(folded):
                j = next(i for i, f in enumerate(folded) if folded.index(f) != i)
                probs.add(f"{where}: options {labels[folded.index(folded[j])]!r} and {labels[j]!r} differ only in case or spacing "
                          "(answers name options ignoring case)", line=_line(it, "options", ln), field="options")
                ok = False
        ordinal = it.get("ordinal", True)
        if isinstance(ordinal, str) and ordinal.strip().lower() in ("yes", "no"):
            ordinal = ordinal.strip().lower() == "yes"
        if not isinstance(ordinal, bool):
            probs.add(f"{where}: 'ordinal' must be true or false, got {_text(ordinal)!r}", line=_line(it, "ordinal", ln), field="ordinal")
            ok = False
        codes = it.get("codes")
        if codes is not None and (not isinstance(codes, list) or not all(_is_label(c) for c in codes)
                                  or (isinstance(opts, list) and len(codes) != len(opts))
                                  or len({_text(c).strip() for c in codes}) != len(codes)):
            probs.add(f"{where}: 'codes' must be a list of distinct answer codes, one per option", line=_line(it, "codes", ln), field="codes")
            ok = False
        cat = it.get("category", "")
        if cat is not None and (isinstance(cat, (dict, list, tuple, set, bytes))):
            probs.add(f"{where}: 'category' must be a name", line=_line(it, "category", ln), field="category")
            ok = False
        if ok:
            items[qid] = SurveyItem(
                id=qid, text=" ".join(text.split()), options=tuple(_text(o).strip() for o in opts), ordinal=ordinal,
                codes=tuple(_text(c).strip() for c in codes) if codes else (), category=_text(cat).strip() if cat else "",
                source="questionnaire",
            )
    return items


def _distribution(raw, item: SurveyItem, probs: _Problems, where: str, line: int | None) -> tuple[float, ...] | None:
    if isinstance(raw, dict):  # {option label: share}
        if probs.duplicates(raw, lambda k: f"{where}: option {_text(k)!r} of {item.id} is given twice"):
            return None
        vals = [0.0] * item.n_options
        named: dict[int, object] = {}
        for k, v in raw.items():
            j = _answer_index(k, item)
            if j is None:
                probs.add(f"{where}: {_text(k)!r} is not an option of {item.id} ({', '.join(item.options)})", line=_line(raw, k, line),
                          field=item.id)
                return None
            if j in named:
                probs.add(f"{where}: {_text(named[j])!r} and {_text(k)!r} both name option {item.options[j]!r} of {item.id}",
                          line=_line(raw, k, line), field=item.id)
                return None
            named[j] = k
            if not _is_number(v) or v < 0:
                probs.add(f"{where}: the share of {_text(k)!r} must be a number >= 0, got {_text(v)!r}", line=_line(raw, k, line),
                          field=item.id)
                return None
            vals[j] = float(v)
    elif isinstance(raw, list):
        if len(raw) != item.n_options:
            probs.add(f"{where}: {len(raw)} shares for the {item.n_options} options of {item.id}", line=line, field=item.id)
            return None
        if not all(_is_number(v) and v >= 0 for v in raw):
            shown = ", ".join(_text(v)[:20] if not isinstance(v, (dict, list)) else type(v).__name__ for v in raw[:8])
            probs.add(f"{where}: shares must be numbers >= 0, got [{shown}{', ...' if len(raw) > 8 else ''}]", line=line, field=item.id)
            return None
        vals = [float(v) for v in raw]
    else:
        probs.add(f"{where}: the distribution for {item.id} must be a list of shares (one per option) or a mapping option: share",
                  line=line, field=item.id)
        return None
    total = sum(vals)
    if not math.isfinite(total):
        probs.add(f"{where}: the shares for {item.id} are too large to add up", line=line, field=item.id)
        return None
    if total <= 0:
        probs.add(f"{where}: the shares for {item.id} are all 0", line=line, field=item.id)
        return None
    return tuple(v / total for v in vals)


def _answer_index(ans, item: SurveyItem) -> int | None:
    """An answer given as option text, answer code, or 1-based option number."""
    if isinstance(ans, bool) or not _is_label(ans):
        return None
    a = _text(ans).strip()
    norm = [" ".join(o.split()).lower() for o in item.options]
    if " ".join(a.split()).lower() in norm:
        return norm.index(" ".join(a.split()).lower())
    if a in item.codes and list(item.codes) != [str(i + 1) for i in range(item.n_options)]:
        return item.codes.index(a)
    if a.isdigit() and len(a) < 10:
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
        if not _is_label(eid) or isinstance(eid, bool):
            probs.add(f"{noun} {k} needs an 'id'", line=ln, field="id")
            continue
        eid = _text(eid)
        where = f"{noun} {eid!r}"
        if eid in seen:
            probs.add(f"{noun} id {eid!r} is used twice", line=_line(e, "id", ln), field="id")
            continue
        seen.add(eid)
        yield e, ln, eid, where, _profile(e.get("profile"), probs, where, _line(e, "profile", ln))


def _groups(doc, items, probs: _Problems) -> list[GroupExample]:
    out = []
    names: dict[str, tuple[str, int | None]] = {}  # the group's name in results -> (id, line) of the first group
    for g, ln, gid, where, prof in _entries(doc, "groups", "group", GROUP_KEYS, "distributions", probs):
        if prof is not None:
            name = prof.country or gid
            if name in names and names[name][0] != gid:
                first, fl = names[name]
                probs.add(f"{where} and group {first!r} (line {fl}) are both named {name!r} in results (a group is named by its "
                          "profile's country, else its id): give each country one group", line=_line(g, "profile", ln), field="profile")
                continue
            names.setdefault(name, (gid, ln))
        n = g.get("n")
        if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n < 1 or not _is_number(n)):
            probs.add(f"{where}: 'n' (respondents) must be a positive whole number, got {_text(n)[:40]!r}", line=_line(g, "n", ln), field="n")
        dists = g.get("distributions")
        if not isinstance(dists, dict) or not dists:
            probs.add(f"{where} needs 'distributions': a mapping item id: shares", line=_line(g, "distributions", ln), field="distributions")
            continue
        probs.duplicates(dists, lambda key: f"{where}: item {_text(key)!r} appears twice")
        given: set[str] = set()
        for key, d in dists.items():
            qid = _text(key)
            dl = _line(dists, key, _line(dists))
            if qid in given:
                probs.add(f"{where}: item {qid!r} appears twice", line=dl, field=qid)
                continue
            given.add(qid)
            if qid not in items:
                if qid not in probs.declared:  # a declared but invalid item has its own problem already
                    probs.add(f"{where}: unknown item id {qid!r} (items: {', '.join(list(items)[:20])})", line=dl, field=qid)
                continue
            p = _distribution(d, items[qid], probs, where, dl)
            if p is not None and prof is not None:
                out.append(GroupExample(group_id=gid, profile=prof, item_id=qid, probs=p,
                                        n=int(n) if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None))
    return out


def _respondents(doc, items, probs: _Problems) -> list[IndividualExample]:
    out = []
    for r, ln, rid, where, prof in _entries(doc, "respondents", "respondent", RESPONDENT_KEYS, "answers", probs):
        answers = r.get("answers")
        if not isinstance(answers, dict) or not answers:
            probs.add(f"{where} needs 'answers': a mapping item id: answer", line=_line(r, "answers", ln), field="answers")
            continue
        probs.duplicates(answers, lambda key: f"{where}: item {_text(key)!r} answered twice")
        given: set[str] = set()
        for key, ans in answers.items():
            qid = _text(key)
            al = _line(answers, key, _line(answers))
            if qid in given:
                probs.add(f"{where}: item {qid!r} answered twice", line=al, field=qid)
                continue
            given.add(qid)
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
                probs.add(f"{where}: answer {_text(ans)[:80]!r} is not an option of {qid} (an option text, code or number 1-{it.n_options})",
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
        probs.add(f"unknown format {_text(fmt)[:80]!r} (this version reads {FORMAT!r})", line=_line(doc, "pluralign"), field="pluralign")
    name = doc.get("name", path.stem)
    name = _text(name) if isinstance(name, (int, float)) and not isinstance(name, bool) else name
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
    probs.leftover_duplicates(doc)
    if not probs.items and not examples:
        probs.add("no answers at all", line=_line(doc), field="groups" if has_g else "respondents")
    if probs.items:
        return None, probs.items
    meta = {k: _text(doc[k]) for k in ("citation", "description") if k in doc}
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
