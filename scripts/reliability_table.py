#!/usr/bin/env python
"""Write docs/reliability.md from the reliability tests (issue 9): run tests/reliability with a
JUnit report, count the cases per class, and how many keep the promise (exit 2, one ``error:``
line, no traceback, earlier outputs untouched; no run lost after a kill).

usage: python scripts/reliability_table.py [--out docs/reliability.md] [--junit FILE]
(--junit: read an existing report instead of running the tests)
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: the second audit's cases (test_audit2.py): new command-line cases, one class
AUDIT2 = "CLI: second audit (new bad flags and files, odd output folders, outputs over inputs)"
#: test name (without parameters) → class, for the tests outside the CLI matrix
CLASSES = {
    "test_seed_file_loads": "loader fuzz: the valid seed file",
    "test_random_bytes_and_truncation": "loader fuzz: random bytes, truncated files",
    "test_wrong_encodings_and_huge_fields": "loader fuzz: wrong encodings, huge fields",
    "test_nan_inf_and_bad_numbers": "loader fuzz: NaN, inf, huge and negative numbers",
    "test_random_json_shapes": "loader fuzz: random JSON shapes",
    "test_train_resume": "kill / interrupt and resume a training run",
    "test_eval_sets": "interrupted evaluation, NaN in outputs, file modes",
    "test_softprompt_resume": "kill and resume a soft-prompt search",
    # issue 27
    "test_questionnaire_yaml": "YAML questionnaire: alias bombs, YAML 1.1 scalars, repeated keys, depth and size limits",
    "test_adapter_files": "damaged adapters and checkpoints (eval, serve, train --init-adapter, --resume)",
    "test_option_errors": "CLI: usage errors, lists naming nothing, soft-prompt constants and DE variants, cache folders",
    "test_setup_pins": "set-up: pinned versions (constraints.txt), SPDX licence",
    "test_output_folders": "output folders: the working folder, another kind of run's folder, two writers at once",
    "test_leaks": "leaks: test groups in --reference-data, fewshot's own cell, a mistyped PLURALIGN_DATA, an adapter on new data",
    "test_softprompt_runs": "soft-prompt folders: a rerun, another kind's folder, a second writer, --resume with changed settings",
    "test_wordassoc_resume": "word-association re-runs: changed settings, fewer steps, unrecorded checkpoints, a finished stage",
    "test_run_records": "run records: compare / report outputs, data paths and hashes on --resume, results named after the data",
    "test_audit2": AUDIT2,
}
MATRIX = {
    "count": "CLI: zero or negative counts",
    "number": "CLI: NaN, inf, out-of-range numbers",
    "choice": "CLI: unknown choices (valid ones listed)",
    "config": "CLI: bad `train --config` file",
    "input file": "CLI: unreadable or malformed input file",
    "output": "CLI: output that cannot be written (found before any work)",
    "results file": "CLI: results file `compare` cannot read",
}


def run_tests(junit: Path) -> None:
    env = dict(os.environ, OMP_NUM_THREADS="1", HF_HUB_OFFLINE="1")
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/reliability", f"--junitxml={junit}"],
                   cwd=ROOT, env=env, check=False)


def classify(case: ET.Element) -> tuple[str, str] | None:
    name, module = case.get("name", ""), case.get("classname", "").rsplit(".", 1)[-1]
    base, _, param = name.partition("[")
    param = param.rstrip("]")
    if module == "test_audit2":  # audit2/COMMAND/N, or a test named test_COMMAND_...
        return AUDIT2, (param.partition("/")[2] if param else base.split("_")[1])
    if base == "test_bad_input_gives_one_error_line_and_changes_nothing":
        cls, _, rest = param.partition("/")
        return MATRIX.get(cls, f"CLI: {cls}"), rest.rsplit("/", 1)[0]
    if base in CLASSES:
        return CLASSES[base], param or base
    if module in CLASSES:
        return CLASSES[module], base
    return None


def table(junit: Path) -> tuple[str, int, int]:
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    commands: dict[str, set] = defaultdict(set)
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("skipped") is not None:
            continue
        c = classify(case)
        if c is None:
            continue
        cls, what = c
        ok = case.find("failure") is None and case.find("error") is None
        counts[cls][0] += 1
        counts[cls][1] += ok
        commands[cls].add(what.split("/")[0] if cls.startswith("CLI") else what)
    order = [*MATRIX.values(), *dict.fromkeys(CLASSES.values())]
    rows = ["| class | cases | keep the promise | where |", "|---|---:|---:|---|"]
    total = kept = 0
    for cls in sorted(counts, key=lambda c: order.index(c) if c in order else len(order)):
        n, k = counts[cls]
        total, kept = total + n, kept + k
        where = ", ".join(sorted(commands[cls]))
        rows.append(f"| {cls} | {n} | {k} | {where if len(where) < 90 else where[:87] + '...'} |")
    rows.append(f"| **all** | **{total}** | **{kept}** | |")
    return "\n".join(rows), total, kept


HEADER = """# Reliability: bad input and interruptions

Written by `scripts/reliability_table.py` from the tests in `tests/reliability/` (do not edit by
hand; rerun the script). The promise: bad input gets one line, `error: FILE, row N, field 'F':
message`, and exit status 2, never a traceback, and earlier results are never touched; an
interrupted run is never lost.

* **CLI matrix** (`test_cli_matrix.py`): every command with each class of bad option or input.
  A case keeps the promise when it exits 2 with exactly one `error:` line, no traceback, a
  pre-existing output folder unchanged (checksums) and no half-made folder. Every option is
  checked before any model loads (`pluralign/cli/_validate.py`).
* **Loader fuzz** (`test_loader_fuzz.py`, hypothesis, 15 examples per case): every loader ends in
  a `PluralignError` or a valid dataset, never another exception; no dataset holds a
  non-finite share. Unusable cells are skipped and counted per reason (`dropped` in
  `data inspect` and in the results JSON; `--strict` fails instead).
* **Kill and resume** (`test_train_resume.py`): SIGKILL inside a checkpoint write (checkpoints
  are staged, then renamed into place) and Ctrl-C after a step; `--resume` takes the newest
  complete checkpoint, names it, and ends with the uninterrupted run's weights bit for bit and
  the same train loss and whole-run seconds. `--resume` of a finished run changes nothing.
* **Soft-prompt search** (`test_softprompt_resume.py`): SIGKILL after a generation's checkpoint
  and inside its write (the previous checkpoint survives); `--resume` ends with the uninterrupted
  search's convergence log and prompt, bit for bit.
* **Evaluation sets** (`test_eval_sets.py`): SIGINT after the first of two methods leaves the old
  set untouched (results are staged and swapped in whole); a staging folder left by SIGKILL is
  cleared by the next run; a Ctrl-C that lands after the results are written exits 0; no output holds NaN (written as `null`); files follow the umask.
* **YAML questionnaires** (`test_questionnaire_yaml.py`, issue 27): kilobyte alias bombs and
  recursive aliases are refused after a bounded count of expanded values (memory measured);
  scalars follow YAML 1.2 (`Yes`, `No`, `NO`, `on` stay text; `01`, `1.10` keep their digits as
  labels); repeated keys in any mapping, two groups named alike in results, options or shares that
  differ only in case are refused; nesting, value length, number length, file size and value count
  have limits; 60 hypothesis mutations of a valid file end in a dataset or one error line.
* **Damaged adapters** (`test_adapter_files.py`, issue 27): 34 kinds of damage (truncated, padded,
  garbled or bit-flipped weights, NaN / inf tensors, malformed fields of the adapter's record, pluralign_adapter.json) in
  `eval --adapter`, `serve --adapter`, `train --stage dpo --init-adapter` and `load_adapter`: one
  line naming the file and the field or tensor, exit 2, no output. Adapters record their weights'
  size and SHA-256. A truncated optimizer / scheduler state on `--resume` is an expected failure
  until `training/trainer.py` checks it (`torch_file_problem`).
* **Options** (`test_option_errors.py`, issue 27): a mistyped option of every command and a
  non-number for every numeric option of every command (typer usage errors: one `error:` line,
  no panel); lists that name nothing (`--countries ,`); soft-prompt constants and DE strategies;
  cache folders under a file; word-association runs shorter than the logging interval.
* **Set-up** (`test_setup_pins.py`, issue 27): constraints.txt pins the installed versions of the
  packages that matter and every declared dependency, every install line of the Makefile uses it,
  and setuptools reads the SPDX licence without a warning.
* **Soft-prompt folders** (`test_softprompt_runs.py`, issue 27): a rerun without `--resume`, a
  training or evaluation folder and a folder another run is writing are refused; `--resume` with
  another model, objective, wordings, constants, population, seed or optimiser setting is refused
  before the model loads, naming the flag; nothing is deleted.
* **Word-association re-runs** (`test_wordassoc_resume.py`, issue 27): each stage records its
  settings; a re-run with other settings, fewer steps than trained, or into checkpoints without
  recorded settings is refused naming the flags; a finished stage is not trained again.
* **Run records** (`test_run_records.py`, issue 27): `compare` never writes over an input or a
  file that is not its table; an interrupted `report` leaves the earlier page with its own plots;
  a training run records its data by absolute path and SHA-256 and refuses `--resume` after the
  data changed or went; an evaluation's result files are named after the data, not the loader.
* **Second audit** (`test_audit2.py`, issue 27): command-line cases not in the tests above (data
  naming nothing, empty files and folders, outputs over another command's files or the inputs,
  resumes of nothing) for eval, train, softprompt, wordassoc, compare, report and generate-eval;
  each ends in one error line with every earlier file unchanged, or succeeds with the right output.

"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "docs" / "reliability.md")
    ap.add_argument("--junit", type=Path, default=None)
    args = ap.parse_args()
    junit = args.junit
    if junit is None:
        junit = Path(tempfile.mkdtemp()) / "reliability.xml"
        run_tests(junit)
    body, total, kept = table(junit)
    args.out.write_text(HEADER + body + "\n", encoding="utf-8")
    print(f"{args.out}: {kept} of {total} cases keep the promise")
    return 0 if kept == total else 1


if __name__ == "__main__":
    sys.exit(main())
