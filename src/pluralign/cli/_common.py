"""Helpers shared by the CLI modules: logging set-up, table printing, and the options several commands take."""

from __future__ import annotations

import logging
import os
import inspect
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import typer

from pluralign._fields import DEFAULT_MODEL, SHARED_HELP, Setting, settings


def quiet_libraries() -> None:
    """Keep transformers / datasets chatter off the user's terminal (errors still show)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1") if os.environ.get("PLURALIGN_OFFLINE", "1") == "1" else None
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers", "accelerate", "peft", "sentence_transformers", "torch"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # pragma: no cover
        pass


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3f}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- shared options
# The options several commands take, declared once (help texts: pluralign._fields.SHARED_HELP).
# Each returns a typer.Option to use as a parameter default, e.g. ``dtype: str = Dtype()``.
def Model(default: Any = DEFAULT_MODEL, help: str = SHARED_HELP["model"]) -> Any:
    """``--model``; ``help`` only where the default means something else (e.g. the adapter's base model)."""
    return typer.Option(default, help=help)


def Device() -> Any:
    return typer.Option("auto", help=SHARED_HELP["device"])


def Dtype() -> Any:
    return typer.Option("auto", help=SHARED_HELP["dtype"])


def BatchSize(default: int, help: str = SHARED_HELP["batch_size"]) -> Any:
    """``--batch-size``; ``help`` says what a batch counts where it is not rows of a forward pass."""
    return typer.Option(default, help=help)


def ChatTemplate(default: Any = True, help: str = SHARED_HELP["chat_template"]) -> Any:
    return typer.Option(default, "--chat-template/--no-chat-template", help=help)


def Threads(default: int = 0) -> Any:
    return typer.Option(default, help=SHARED_HELP["threads"])


def Progress() -> Any:
    return typer.Option(True, help=SHARED_HELP["progress"])


# --------------------------------------------------------------------------- options from a config dataclass
def _cli_type(s: Setting) -> tuple[Any, Any]:
    """The annotation and default of setting ``s``'s flag: a list is one comma-separated string (its
    default the default list joined; with ``metadata["repeat"]``, a repeated flag);
    ``metadata["path"]`` makes it a path."""
    default = s.meta.get("cli_default", s.default)
    base = s.base
    if base in (list, tuple):
        if s.meta.get("repeat"):
            return Optional[list[str]], None
        return (str, ",".join(map(str, default))) if default else (Optional[str], None)
    if s.meta.get("path"):
        return (Optional[Path] if default is None else Path), (None if default is None else Path(default))
    return (Optional[base] if default is None else base), default


def _param(s: Setting) -> inspect.Parameter:
    ann, default = _cli_type(s)
    decls = [s.meta["flag"]] if "flag" in s.meta else []
    if not decls and s.base is bool and default is False:
        decls = ["--" + s.name.replace("_", "-")]
    return inspect.Parameter(s.name, inspect.Parameter.KEYWORD_ONLY, annotation=ann, default=typer.Option(default, *decls, help=s.help))


def option_params(cls) -> list[inspect.Parameter]:
    """One ``typer`` option per setting of the config dataclass ``cls`` (nested settings blocks
    included, named with their prefix), in declaration order: the flag ``--field-name`` (or
    ``metadata["flag"]``; a switch that is off by default is a lone ``--field-name``), the field's
    help and default. Settings with ``metadata["cli"] = False`` are left out (config file / API only)."""
    return [_param(s) for s in settings(cls) if s.meta.get("cli", True) is not False]


def field_setting(cls, name: str, **meta: Any) -> Setting:
    """The setting ``name`` (its flat name) of the config dataclass ``cls``; ``meta`` overrides its
    metadata where a command gives it a wider meaning (``help``, ``cli_default``; a ``flag`` renames it)."""
    for s in settings(cls):
        if s.name == name:
            if meta:
                s = Setting(name, s.path, s.field, s.type)
                s.meta.update(meta)
                if "flag" in meta:
                    s.name = meta["flag"].split("/")[0].lstrip("-").replace("-", "_")
            return s
    raise KeyError(f"{cls.__name__} has no setting {name!r}")


def field_option(cls, name: str, **meta: Any) -> inspect.Parameter:
    """The option of the one setting ``name`` (its flat name) of the config dataclass ``cls``, for a
    command whose options come from several configs (:func:`command_of`); ``meta``: see :func:`field_setting`."""
    return _param(field_setting(cls, name, **meta))


def cli_defaults(cls) -> dict[str, Any]:
    """Each flag's default (as :func:`option_params` declares it), by setting name."""
    return {p.name: p.default.default for p in option_params(cls)}


def command_from(cls, run: Callable[..., None], *, before: Sequence[inspect.Parameter] = (),
                 after: Sequence[inspect.Parameter] = ()) -> Callable[..., None]:
    """A typer command whose options are ``before``, :func:`option_params` of ``cls``, then ``after``
    (the command's own options); it calls ``run(**arguments)`` through
    :func:`pluralign.cli.main.run_guarded` (one ``error:`` line)."""
    return command_of([*before, *option_params(cls), *after], run)


def command_of(params: Sequence[inspect.Parameter], run: Callable[..., None]) -> Callable[..., None]:
    """A typer command with the options ``params`` (from :func:`field_option`, :func:`option` and the
    shared options' parameters) that calls ``run(**arguments)`` through ``run_guarded``."""

    def command(**a: Any) -> None:
        from pluralign.cli.main import run_guarded

        run_guarded(run, **a)

    command.__signature__ = inspect.Signature(list(params))  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}  # typing.get_type_hints(command) reads the flags' types
    return command


def shared_option(name: str, annotation: Any, opt: Any) -> inspect.Parameter:
    """A shared option (``Model()``, ``Dtype()``, ...) as a parameter for :func:`command_of`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=opt)


def option(name: str, annotation: Any, default: Any, *decls: str, help: str) -> inspect.Parameter:
    """A command's own option (one no config dataclass holds), for :func:`command_from`."""
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=typer.Option(default, *decls, help=help))
