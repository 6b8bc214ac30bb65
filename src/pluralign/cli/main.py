"""The ``pluralign`` command line. Each sub-command lives in its own module of this package and
exposes ``register(app)``; :data:`SUBCOMMANDS` lists them. Bad input prints one ``error:`` line and
exits with status 2, never a traceback (set ``PLURALIGN_DEBUG=1`` to see one)."""

from __future__ import annotations

import importlib
import os
import sys

import typer

from pluralign.errors import PluralignError

app = typer.Typer(
    name="pluralign",
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
SUBCOMMANDS = ("evaluate", "data", "train", "compare", "softprompt", "wordassoc", "serve", "report")


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


def main() -> None:  # pragma: no cover - thin wrapper
    try:
        app(standalone_mode=True)
    except PluralignError as e:
        typer.echo(f"error: {e}", err=True)
        sys.exit(2)


def run_guarded(fn, *args, **kwargs):
    """Call ``fn``; turn a :class:`PluralignError` into one ``error:`` line and exit 2."""
    try:
        return fn(*args, **kwargs)
    except PluralignError as e:
        if os.environ.get("PLURALIGN_DEBUG"):
            raise
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


if __name__ == "__main__":  # `python -m pluralign.cli.main` / `accelerate launch -m pluralign.cli.main`
    main()
