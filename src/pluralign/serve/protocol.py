"""Request parsing for the server: OpenAI-style errors and the checked forms of a chat completion and
a survey request. Everything a client can get wrong is an :class:`APIError` (status 4xx, OpenAI's
``{"error": {"message", "type", "param", "code"}}`` body), raised before the request reaches the model.

Every string of a body is checked here: it must be encodable as UTF-8 (JSON's ``"\\udfff"`` escape
gives a lone surrogate, which is refused), within its length limit (:class:`ServeConfig`) and free of
control characters (message text may hold tabs and line breaks; profile values, ids and the model
name are one line).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from pluralign.data.profile import PROFILE_FIELDS, Profile
from pluralign.errors import PluralignError

ROLES = ("system", "developer", "user", "assistant")  # developer: OpenAI's newer name for system
LABEL_STYLES = ("auto", "digits", "letters")
SCORINGS = ("next-token", "loglik")


@dataclass
class ServeConfig:
    """Limits of the HTTP side (the batching settings live on the :class:`~pluralign.serve.engine.Engine`)."""

    api_key: str | None = None  # every route but /health then needs Authorization: Bearer <key>
    max_concurrent: int = 64  # requests in flight (queued or running); more get 429
    max_body_bytes: int = 1 << 20  # larger bodies get 413
    max_input_tokens: int = 4096  # longer prompts (survey: item text + options) get 400
    max_tokens_limit: int = 512  # the largest max_tokens a request may ask for (and the default)
    max_survey_items: int = 256  # items per /v1/survey request
    max_message_chars: int = 32768  # characters of one message's content, and of one survey item (text + options)
    max_profile_chars: int = 256  # characters of one profile value (and of each key and value of profile.extra)
    max_profile_extra: int = 32  # attributes in profile.extra
    host: str = "127.0.0.1"  # the address the server is bound to; on a loopback address the Host header must be loopback
    header_timeout_s: float = 10.0  # a connection must deliver a request's headers within this (else it is closed)
    body_timeout_s: float = 30.0  # ... and the request body within this once the headers are in (else 408)
    keep_alive_s: int = 5  # an idle keep-alive connection is closed after this
    shutdown_timeout_s: int = 10  # on SIGTERM, requests still running after this are cancelled
    max_header_bytes: int = 16384  # larger request heads are refused by the HTTP parser


class APIError(Exception):
    """An error answered as ``status`` with OpenAI's error object."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad(message: str, param: str | None = None, code: str | None = None, status: int = 400) -> APIError:
    return APIError(status, message, param=param, code=code)


# ----------------------------------------------------------------------------------------- strings
MAX_NAME_CHARS = 256  # the model name, survey item ids, stop strings
#: control characters other than tab, line feed and carriage return (C0, DEL, C1)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
#: ... and those three too, and Unicode's line and paragraph separators: one-line values
_CONTROL_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def _show(v: Any, n: int = 80) -> str:
    """``repr(v)``, cut to about ``n`` characters (client values echoed in error messages)."""
    r = repr(v)
    return r if len(r) <= n else r[:n] + "..."


def _unicode_problem(s: str) -> str | None:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"is not valid Unicode: it holds the lone surrogate {s[e.start]!r} at position {e.start}"
    return None


def check_unicode(data: Any) -> None:
    """Every string of a parsed JSON value, keys included, must be encodable as UTF-8 (400 otherwise)."""
    stack = [(data, None)]
    while stack:
        v, where = stack.pop()
        if isinstance(v, str):
            msg = _unicode_problem(v)
            if msg:
                raise bad(f"the string at {where or 'the top level'} {msg}", param=where, code="invalid_string")
        elif isinstance(v, dict):
            for k, x in v.items():
                msg = _unicode_problem(k)
                if msg:
                    raise bad(f"a key of {where or 'the request body'} {msg}", param=where, code="invalid_string")
                k = k[:MAX_NAME_CHARS]
                stack.append((x, f"{where}.{k}" if where else k))
        elif isinstance(v, list):
            stack.extend((x, f"{where}[{i}]") for i, x in enumerate(v))


def check_text(s: str, param: str, limit: int, *, one_line: bool = False, what: str = "text", flag: str | None = None) -> str:
    """``s`` if it is at most ``limit`` characters and free of control characters (line breaks and tabs
    allowed unless ``one_line``); else a 400 naming ``param``."""
    if len(s) > limit:
        hint = f", {flag}" if flag else ""
        raise bad(f"{what} is {len(s)} characters, more than this server accepts ({limit}{hint})", param=param,
                  code="string_too_long")
    m = (_CONTROL_LINE if one_line else _CONTROL).search(s)
    if m:
        raise bad(f"{what} holds the control character {m.group()!r} at position {m.start()}"
                  + (" (values are one line of text)" if one_line else ""), param=param, code="invalid_characters")
    return s


# ----------------------------------------------------------------------------------------- JSON
def _no_constants(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_json(body: bytes) -> dict:
    """The request body as a JSON object (400 otherwise; NaN / Infinity and strings that are not valid
    Unicode are refused)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        raise bad("request body is not UTF-8", code="invalid_json") from None
    except (json.JSONDecodeError, ValueError) as e:
        raise bad(f"malformed JSON in the request body ({e})", code="invalid_json") from None
    except RecursionError:
        raise bad("malformed JSON in the request body (nested too deeply)", code="invalid_json") from None
    if not isinstance(data, dict):
        raise bad("the request body must be a JSON object", code="invalid_json")
    check_unicode(data)
    return data


# ----------------------------------------------------------------------------------------- values
def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return _is_int(v) or (isinstance(v, float) and math.isfinite(v))


def _bool(d: dict, key: str, default: bool) -> bool:
    v = d.get(key, default)
    if v is None:
        return default
    if not isinstance(v, bool):
        raise bad(f"'{key}' must be true or false, got {_show(v)}", param=key)
    return v


def _number(d: dict, key: str, default: float, lo: float, hi: float, *, open_lo: bool = False) -> float:
    v = d.get(key)
    if v is None:
        return default
    if not _is_num(v):
        raise bad(f"'{key}' must be a number, got {_show(v)}", param=key)
    if v > hi or v < lo or (open_lo and v == lo):
        raise bad(f"'{key}' must be in {'(' if open_lo else '['}{lo}, {hi}], got {v}", param=key)
    return float(v)


def _choice(d: dict, key: str, default: str | None, choices: tuple[str, ...]) -> str | None:
    v = d.get(key)
    if v is None:
        return default
    if v not in choices:
        raise bad(f"'{key}' must be one of {', '.join(choices)}, got {_show(v)}", param=key)
    return v


def parse_profile(v: Any, param: str = "profile", cfg: ServeConfig | None = None) -> Profile | None:
    """A request's ``profile`` object, validated by :class:`Profile` as in training: unknown fields and
    wrongly typed values are a 400 (``code: invalid_profile``). Strings everywhere, ``age`` a whole
    number, ``income`` a decile 1-10 or a label, ``extra`` an object of further attributes; each string
    one line of at most ``cfg.max_profile_chars`` characters, at most ``cfg.max_profile_extra`` extras."""
    cfg = cfg or ServeConfig()
    if v is None:
        return None

    def invalid(msg, where):
        return APIError(400, msg, param=where, code="invalid_profile")

    def text(x, where, what):
        return check_text(x, where, cfg.max_profile_chars, one_line=True, what=what, flag="--max-profile-chars")

    if not isinstance(v, dict):
        raise invalid(f"'{param}' must be an object of profile fields ({', '.join(PROFILE_FIELDS)})", param)
    for k, x in v.items():
        where = f"{param}.{k}"
        if k == "extra":
            if x is None:
                continue
            if not isinstance(x, dict) or not all(isinstance(a, (str, int, float)) and not isinstance(a, bool) for a in x.values()):
                raise invalid("'extra' must be an object of attribute -> string", where)
            if len(x) > cfg.max_profile_extra:
                raise invalid(f"'extra' has {len(x)} attributes, more than this server accepts ({cfg.max_profile_extra})", where)
            for a, b in x.items():
                text(a, where, "an attribute name of 'extra'")
                if isinstance(b, float) and not math.isfinite(b):
                    raise invalid(f"profile value '{a}' must be a finite number or a string", f"{where}.{a}")
                text(b if isinstance(b, str) else str(b), f"{where}.{a}", f"profile value '{a}'")
            continue
        if k not in PROFILE_FIELDS:
            raise invalid(f"unknown profile field {_show(k)} (known: {', '.join(PROFILE_FIELDS)}, extra)",
                          f"{param}.{k[:MAX_NAME_CHARS]}")
        if x is None:
            continue
        if k == "age":
            ok = _is_int(x) or (isinstance(x, float) and x.is_integer())
        elif k == "income":
            ok = _is_int(x) or isinstance(x, str)
        else:
            ok = isinstance(x, str)
        if not ok:
            want = {"age": "a whole number of years", "income": "a decile 1-10 or a label"}.get(k, "a string")
            raise invalid(f"profile field {k!r} must be {want}, got {_show(x)}", where)
        if isinstance(x, str):
            text(x, where, f"profile field {k!r}")
    try:
        return Profile.from_dict(v)
    except PluralignError as e:
        raise invalid(e.message, f"{param}.{e.field}" if e.field else param) from None


# ----------------------------------------------------------------------------------------- chat
#: accepted and ignored (no effect on the output)
_IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "stream_options", "prompt_cache_key",
            "safety_identifier"}
#: accepted only at their no-op value
_NOOP = {"presence_penalty": 0, "frequency_penalty": 0, "logprobs": False, "n": 1, "logit_bias": {}, "tools": [],
         "tool_choice": "none", "functions": [], "top_logprobs": 0}
CHAT_FIELDS = {"model", "messages", "profile", "profile_prompt", "max_tokens", "max_completion_tokens", "temperature",
               "top_p", "seed", "stop", "stream", "response_format"} | _IGNORED | set(_NOOP)


@dataclass
class Sampling:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    stop: list[str] = field(default_factory=list)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 1e-5


@dataclass
class ChatRequest:
    model: str
    messages: list[dict]
    profile: Profile | None
    profile_prompt: bool
    sampling: Sampling
    stream: bool = False
    include_usage: bool = False


def _content(c: Any, i: int) -> str:
    if isinstance(c, str):
        return c
    if isinstance(c, list):
        parts = []
        for j, p in enumerate(c):
            if not isinstance(p, dict) or p.get("type") != "text" or not isinstance(p.get("text"), str):
                raise bad("only text content parts ({'type': 'text', 'text': ...}) are supported",
                          param=f"messages[{i}].content[{j}]")
            parts.append(p["text"])
        return "".join(parts)
    raise bad("message content must be a string or a list of text parts", param=f"messages[{i}].content")


def parse_messages(v: Any, cfg: ServeConfig | None = None) -> list[dict]:
    cfg = cfg or ServeConfig()
    if not isinstance(v, list):
        raise bad("'messages' must be a list of {role, content} objects", param="messages")
    if not v:
        raise bad("'messages' must not be empty", param="messages", code="empty_messages")
    out = []
    for i, m in enumerate(v):
        if not isinstance(m, dict):
            raise bad("each message must be an object with 'role' and 'content'", param=f"messages[{i}]")
        role = m.get("role")
        if role not in ROLES:
            raise bad(f"unsupported role {_show(role)} (supported: {', '.join(ROLES)})", param=f"messages[{i}].role",
                      code="unsupported_role")
        if m.get("tool_calls") or m.get("function_call"):
            raise bad("tool calls are not supported", param=f"messages[{i}].tool_calls")
        content = check_text(_content(m.get("content"), i), f"messages[{i}].content", cfg.max_message_chars,
                             what=f"message {i}", flag="--max-message-chars")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def parse_stop(v: Any) -> list[str]:
    if v is None:
        return []
    stops = [v] if isinstance(v, str) else v
    if not isinstance(stops, list) or len(stops) > 4 or not all(isinstance(s, str) and s for s in stops):
        raise bad("'stop' must be a non-empty string or a list of up to 4 non-empty strings", param="stop")
    return [check_text(s, "stop", MAX_NAME_CHARS, what="a stop string") for s in stops]


def _model(d: dict, model_id: str, *, required: bool) -> str | None:
    model = d.get("model")
    if model is None and not required:
        return None
    if not isinstance(model, str) or not model:
        raise bad("'model' must be the served model's id (see GET /v1/models)", param="model")
    check_text(model, "model", MAX_NAME_CHARS, one_line=True, what="'model'")
    if model != model_id:
        raise APIError(404, f"the model {_show(model)} does not exist (this server serves {model_id!r})", param="model",
                       code="model_not_found")
    return model


def parse_chat(d: dict, *, model_id: str, max_tokens_limit: int | None = None, default_profile_prompt: bool = True,
               cfg: ServeConfig | None = None) -> ChatRequest:
    """Check a ``/v1/chat/completions`` body against the limits of ``cfg`` (``max_tokens_limit``
    overrides ``cfg.max_tokens_limit``). Unknown fields are refused, as OpenAI does."""
    cfg = cfg or ServeConfig()
    if max_tokens_limit is None:
        max_tokens_limit = cfg.max_tokens_limit
    for k in d:
        if k not in CHAT_FIELDS:
            raise bad(f"unrecognized request argument {_show(k)}", param=k[:MAX_NAME_CHARS], code="unknown_parameter")
    for k, noop in _NOOP.items():
        if k in d and d[k] is not None and d[k] != noop:
            raise bad(f"'{k}' is not supported by this server (only {json.dumps(noop)})", param=k, code="unsupported_parameter")
    rf = d.get("response_format")
    if rf is not None and rf != {"type": "text"}:
        raise bad("only response_format {'type': 'text'} is supported", param="response_format", code="unsupported_parameter")
    model = _model(d, model_id, required=True)
    messages = parse_messages(d.get("messages"), cfg)
    key = "max_completion_tokens" if d.get("max_completion_tokens") is not None else "max_tokens"
    mt = d.get(key)
    if mt is None:
        mt = max_tokens_limit
    elif not _is_int(mt) or mt < 1:
        raise bad(f"'{key}' must be a positive whole number, got {_show(mt)}", param=key)
    elif mt > max_tokens_limit:
        raise bad(f"'{key}' is {mt}, more than this server allows ({max_tokens_limit}, --max-tokens-limit)", param=key,
                  code="max_tokens_exceeded")
    seed = d.get("seed")
    if seed is not None and not _is_int(seed):
        raise bad(f"'seed' must be a whole number, got {_show(seed)}", param="seed")
    so = d.get("stream_options")
    if so is not None and not isinstance(so, dict):
        raise bad("'stream_options' must be an object", param="stream_options")
    return ChatRequest(
        model=model, messages=messages, profile=parse_profile(d.get("profile"), cfg=cfg),
        profile_prompt=_bool(d, "profile_prompt", default_profile_prompt),
        sampling=Sampling(
            max_tokens=mt, temperature=_number(d, "temperature", 1.0, 0.0, 2.0), top_p=_number(d, "top_p", 1.0, 0.0, 1.0, open_lo=True),
            seed=seed, stop=parse_stop(d.get("stop")),
        ),
        stream=_bool(d, "stream", False), include_usage=bool((so or {}).get("include_usage")),
    )


# ----------------------------------------------------------------------------------------- survey
SURVEY_FIELDS = {"model", "items", "profile", "profile_prompt", "labels", "scoring", "chat_template"}


@dataclass
class SurveyRequest:
    items: list[dict]  # {"id", "text", "options", "ordinal"}
    profile: Profile
    profile_prompt: bool | None
    labels: str | None
    scoring: str
    chat_template: bool | None


def parse_survey(d: dict, *, model_id: str, max_items: int | None = None, cfg: ServeConfig | None = None) -> SurveyRequest:
    """Check a ``/v1/survey`` body: ``items`` (each ``text`` + ``options``, optional ``id``), a ``profile``.
    An item (text and options together) may hold ``cfg.max_message_chars`` characters."""
    cfg = cfg or ServeConfig()
    if max_items is None:
        max_items = cfg.max_survey_items
    for k in d:
        if k not in SURVEY_FIELDS:
            raise bad(f"unrecognized request argument {_show(k)} (known: {', '.join(sorted(SURVEY_FIELDS))})",
                      param=k[:MAX_NAME_CHARS], code="unknown_parameter")
    _model(d, model_id, required=False)
    items = d.get("items")
    if not isinstance(items, list) or not items:
        raise bad("'items' must be a non-empty list of {text, options} objects", param="items")
    if len(items) > max_items:
        raise bad(f"{len(items)} items, more than this server scores per request ({max_items}, --max-survey-items)",
                  param="items", code="too_many_items")
    out, seen = [], set()
    for i, it in enumerate(items):
        if not isinstance(it, dict):
            raise bad("each item must be an object with 'text' and 'options'", param=f"items[{i}]")
        extra = set(it) - {"id", "text", "options", "ordinal"}
        if extra:
            raise bad(f"unknown item field {_show(sorted(extra)[0])} (known: id, text, options, ordinal)", param=f"items[{i}]")
        text, opts = it.get("text"), it.get("options")
        if not isinstance(text, str) or not text.strip():
            raise bad("item 'text' must be a non-empty string", param=f"items[{i}].text")
        if not isinstance(opts, list) or len(opts) < 2 or not all(isinstance(o, str) and o.strip() for o in opts):
            raise bad("item 'options' must be a list of at least two non-empty strings", param=f"items[{i}].options")
        size = len(text) + sum(len(o) for o in opts)
        if size > cfg.max_message_chars:
            raise bad(f"item {i} (text and options) is {size} characters, more than this server accepts "
                      f"({cfg.max_message_chars}, --max-message-chars)", param=f"items[{i}]", code="string_too_long")
        check_text(text, f"items[{i}].text", cfg.max_message_chars, what=f"the text of item {i}")
        for j, o in enumerate(opts):
            check_text(o, f"items[{i}].options[{j}]", cfg.max_message_chars, what=f"option {j} of item {i}")
        iid = it.get("id", f"item{i + 1}")
        if not isinstance(iid, (str, int)) or isinstance(iid, bool) or str(iid) in seen:
            raise bad("item 'id' must be a unique string", param=f"items[{i}].id")
        if isinstance(iid, str):
            check_text(iid, f"items[{i}].id", MAX_NAME_CHARS, one_line=True, what="an item id")
        seen.add(str(iid))
        ordinal = it.get("ordinal", True)
        if not isinstance(ordinal, bool):
            raise bad("item 'ordinal' must be true or false", param=f"items[{i}].ordinal")
        out.append({"id": str(iid), "text": text, "options": list(opts), "ordinal": ordinal})
    pp = d.get("profile_prompt")
    if pp is not None and not isinstance(pp, bool):
        raise bad(f"'profile_prompt' must be true or false, got {_show(pp)}", param="profile_prompt")
    ct = d.get("chat_template")
    if ct is not None and not isinstance(ct, bool):
        raise bad(f"'chat_template' must be true or false, got {_show(ct)}", param="chat_template")
    return SurveyRequest(
        items=out, profile=parse_profile(d.get("profile"), cfg=cfg) or Profile(), profile_prompt=pp,
        labels=_choice(d, "labels", None, LABEL_STYLES), scoring=_choice(d, "scoring", "next-token", SCORINGS), chat_template=ct,
    )
