"""The ``pluralign`` command line. Each sub-command lives in its own module of this package and
exposes ``register(app)``; :data:`SUBCOMMANDS` lists them. Bad input prints one ``error:`` line and
exits with status 2, never a traceback (set ``PLURALIGN_DEBUG=1`` to see one)."""

from __future__ import annotations

import importlib
import os
import sys

import typer
from typer.core import TyperGroup

from pluralign.errors import PluralignError

try:  # typer >= 0.2x vendors its own copy of click
    from typer._click import exceptions as _cx
    from typer.exceptions import Abort as _Abort
except ImportError:  # pragma: no cover - a typer that runs on click itself
    from click import exceptions as _cx

    _Abort = _cx.Abort


class _NeverRaised(Exception):
    pass


_NoArgsIsHelp = getattr(_cx, "NoArgsIsHelpError", _NeverRaised)


def usage_error_line(e) -> str:
    """A click usage error (mistyped option, value of the wrong type, missing option) as one
    ``error:`` line naming the option and where to read the usage."""
    msg = " ".join(e.format_message().split())
    ctx = getattr(e, "ctx", None)
    if isinstance(e, _cx.UsageError) and ctx is not None and ctx.command_path:
        msg += f" (usage: {ctx.command_path} --help)"
    return f"error: {msg}"


class _Group(TyperGroup):
    """The root command: a usage error is one ``error:`` line on stderr and exit status 2 (not
    typer's boxed panel), like every other bad input."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except _NoArgsIsHelp as e:  # `pluralign` / `pluralign wordassoc` alone: the help
            from typer import core as typer_core

            if not (getattr(typer_core, "HAS_RICH", False) and getattr(self, "rich_markup_mode", None) is not None):
                e.show()  # rich has printed the help already
            sys.exit(e.exit_code)
        except _cx.ClickException as e:
            if os.environ.get("PLURALIGN_DEBUG"):
                raise
            typer.echo(usage_error_line(e), err=True)
            sys.exit(e.exit_code)
        except _Abort:
            typer.echo("Aborted!", err=True)
            sys.exit(1)
        # non-standalone click returns the exit code of a typer.Exit, else the command's value (None)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


app = typer.Typer(
    name="pluralign",
    cls=_Group,
    help="Pluralistic cultural alignment of language models: evaluate a model on survey answers of "
    "demographic groups, align it (CuMA, LoRA baselines, soft prompts, word associations) and compare.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def _root() -> None:
    """Pluralistic cultural alignment of language models."""


#: modules of pluralign.cli that register sub-commands (a missing one is skipped)
SUBCOMMANDS = ("evaluate", "data", "train", "compare", "softprompt", "wordassoc", "serve", "analyze", "generate")


def _register_all() -> None:
    for name in SUBCOMMANDS:
        try:
            mod = importlib.import_module(f"pluralign.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"pluralign.cli.{name}":
                continue
            raise
        mod.register(app)


_register_all()


#: set by :func:`main` (the installed ``pluralign`` entry point), not by in-process callers such as tests
_ENTRY_POINT = False


def main() -> None:  # pragma: no cover - thin wrapper
    global _ENTRY_POINT
    _ENTRY_POINT = True
    try:
        app(standalone_mode=True)
    except PluralignError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


def run_guarded(fn, *args, **kwargs):
    """Call ``fn``; turn a :class:`PluralignError` into one ``error:`` line and exit 2."""
    try:
        result = fn(*args, **kwargs)
    except PluralignError as e:
        if os.environ.get("PLURALIGN_DEBUG"):
            raise
        _name_the_flag(e, kwargs)
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    if _ENTRY_POINT:
        # the work is done and written: a Ctrl-C during interpreter shutdown must not turn a finished
        # run into exit 130 ("Aborted!")
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    return result


#: internal field names (adapter and trainer configs) -> the option that sets them
FIELD_FLAGS = {"r": "rank", "n_experts": "experts", "lora_alpha": "alpha", "learning_rate": "lr",
               "per_device_train_batch_size": "batch_size", "max_steps": "steps"}


def _name_the_flag(e: PluralignError, options) -> None:
    """An error about a setting (no file) names the command's option (``--rank``), not the internal
    field (``r``) it ends up in. ``options``: the command's parameter names (its flags, dashed)."""
    if e.file or not e.field or str(e.field).startswith("--"):
        return
    name = FIELD_FLAGS.get(str(e.field), str(e.field))
    if name in options:
        e.field = "--" + name.replace("_", "-")


if __name__ == "__main__":  # `python -m pluralign.cli.main` / `accelerate launch -m pluralign.cli.main`
    main()
