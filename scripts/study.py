"""The controlled study of docs/results/study.md: one command, resumable.

    python scripts/study.py configs/study/beat-the-mean.json            # run (or continue) every job
    python scripts/study.py configs/study/beat-the-mean.json --report   # tables and plots only
    python scripts/study.py configs/study/beat-the-mean.json --dry-run  # print the commands

Every job is one training run (``pluralign train``) followed by its evaluation on the run's own
held-out part (``pluralign eval --adapter RUN/adapter``), or an evaluation only (prompting
baselines). A job whose ``eval/summary.json`` exists is skipped; a training run interrupted midway
continues from its newest checkpoint (``--resume``) at the next invocation. Jobs run ``--workers``
at a time, sharing the CPU's cores (``--workers 1``: one job on every core), and write their logs beside their outputs.

The config (JSON) gives ``root`` (output folder), ``common`` (flags of every training run),
``eval_common`` (flags of every evaluation), ``sets`` (named lists of held-out countries) and
``jobs``: each with ``name``, ``set`` (or ``split``/``test_units`` for other splits), ``seed``,
``train`` (extra training flags; absent for evaluation-only jobs) and ``eval`` (extra eval flags).
``${NAME}`` in any string is read from the environment (a model file's place on this machine).
After the jobs, the config's ``report`` script (default ``scripts/study_report.py``; ``null``: none) writes the
tables (``--report`` runs only that).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _flags(d: dict) -> list[str]:
    out = []
    for k, v in d.items():
        flag = "--" + k.replace("_", "-")
        if v is True:
            out.append(flag)
        elif v is False:
            out.append("--no-" + k.replace("_", "-"))
        elif isinstance(v, list):
            out += [flag, ",".join(map(str, v))]
        elif v is not None:
            out += [flag, str(v)]
    return out


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(obj, where: str = "config"):
    """``${NAME}`` in any string of the config is replaced by the environment variable NAME (so a
    config can name a model file that lives in a different place on each machine); an unset
    variable is an error naming the field."""
    if isinstance(obj, dict):
        return {k: expand_env(v, f"{where}.{k}") for k, v in obj.items()}
    if isinstance(obj, list):
        return [expand_env(v, f"{where}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, str):
        def sub(m):
            if m.group(1) not in os.environ:
                raise SystemExit(f"error: {where}: environment variable {m.group(1)} is not set")
            return os.environ[m.group(1)]
        return _ENV.sub(sub, obj)
    return obj


def expand(cfg: dict) -> list[dict]:
    """Jobs with their output folder and commands."""
    cfg = expand_env(cfg)
    root = Path(cfg["root"])
    jobs = []
    for j in cfg["jobs"]:
        seeds = j.get("seeds", [j.get("seed", 0)])
        sets = j.get("sets", [j["set"]] if "set" in j else [None])
        for st in sets:
            for seed in seeds:
                name = j["name"] + (f"-{st}" if st else "") + f"-s{seed}"
                out = root / name
                sel = dict(cfg.get("selection", {}))
                sel.update(j.get("selection", {}))
                if st:  # a named set of held-out countries (one-way country split unless the selection says two-way)
                    sel.setdefault("split", "country")
                    sel.update(test_units=cfg["sets"][st])
                train_cmd = None
                if "train" in j:
                    targs = {**cfg.get("common", {}), **sel, **j["train"], "seed": seed, "out": str(out)}
                    train_cmd = ["pluralign", "train", *_flags(targs), "--no-progress"]
                eargs = {**cfg.get("eval_common", {}), **j.get("eval", {}), "out": str(out / "eval")}
                if train_cmd is not None:
                    eval_cmd = ["pluralign", "eval", "--model", str(targs.get("model", "smollm2-135m")),
                                "--adapter", str(out / "adapter"), *_flags({k: v for k, v in eargs.items() if k != "model"}), "--no-progress"]
                else:
                    esel = {k: v for k, v in sel.items() if k in ("data", "split", "test_units", "questions", "countries", "test_questions",
                                                                   "question_test_frac", "val_frac", "map_before")}
                    eval_cmd = ["pluralign", "eval", *_flags({**esel, **eargs, "seed": seed}), "--no-progress"]
                jobs.append({"name": name, "group": j["name"], "set": st, "seed": seed, "out": out,
                             "train": train_cmd, "eval": eval_cmd})
    return jobs


def _exe(cmd: list[str]) -> list[str]:
    """``pluralign ...`` run with this interpreter (the study needs no activated venv)."""
    return [sys.executable, "-m", "pluralign.cli.main", *cmd[1:]] if cmd and cmd[0] == "pluralign" else cmd


def run_job(job: dict, dry: bool = False) -> str:
    out: Path = job["out"]
    if (out / "eval" / "summary.json").exists():
        return f"{job['name']}: done (skipped)"
    lock = out / ".running"
    waited = False
    while lock.exists() and not dry:  # another process runs this job: wait for it, then finish what it left
        try:
            os.kill(int(lock.read_text().strip()), 0)
        except (ValueError, OSError):
            break  # a stale lock of a process that died: take the job over
        waited = True
        time.sleep(20)
    if waited and (out / "eval" / "summary.json").exists():
        return f"{job['name']}: finished by another process"
    if not dry:
        out.mkdir(parents=True, exist_ok=True)
        lock.write_text(str(os.getpid()))
    try:
        return _run_job(job, out, dry)
    finally:
        if not dry and lock.exists() and lock.read_text().strip() == str(os.getpid()):
            lock.unlink()


def _run_locked(cmd, fh, env, lock: Path):
    """Run ``cmd``; while it runs, the lock names its pid (so a restarted study waits for it)."""
    p = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    lock.write_text(str(p.pid))
    p.wait()
    lock.write_text(str(os.getpid()))
    return p


def _run_job(job: dict, out: Path, dry: bool) -> str:
    threads = str(job.get("threads", 1))
    env = dict(os.environ, OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads, TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1")
    t0 = time.time()
    if job["train"] and not (out / "adapter" / "adapter_config.json").exists():
        cmd = list(job["train"])
        ck = out / "checkpoints"
        if ck.exists() and any(p.name.startswith("checkpoint-") for p in ck.iterdir()):
            cmd.append("--resume")
        if dry:
            return shlex.join(cmd) + "\n" + shlex.join(job["eval"])
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "train.log", "a") as fh:
            r = _run_locked(_exe(cmd), fh, env, out / ".running")
        if r.returncode:
            return f"{job['name']}: TRAINING FAILED (exit {r.returncode}, see {out / 'train.log'})"
    if dry:
        return shlex.join(job["eval"])
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "eval.log", "a") as fh:
        r = _run_locked(_exe(job["eval"]), fh, env, out / ".running")
    if r.returncode:
        return f"{job['name']}: EVALUATION FAILED (exit {r.returncode}, see {out / 'eval.log'})"
    return f"{job['name']}: finished in {time.time() - t0:.0f} s"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--only", default=None, help="run only jobs whose name starts with one of these (comma-separated)")
    ap.add_argument("--dry-run", action="store_true")
    ap.add_argument("--report", action="store_true", help="only write the report from finished jobs")
    args = ap.parse_args()
    cfg = json.loads(Path(args.config).read_text())
    jobs = expand(cfg)
    for j in jobs:  # the cores shared among the jobs that run at once
        j["threads"] = max(1, (os.cpu_count() or 2) // max(1, args.workers))
    if args.only:
        pre = tuple(args.only.split(","))
        jobs = [j for j in jobs if j["name"].startswith(pre)]
    if not args.report:
        print(f"{len(jobs)} jobs, {sum((j['out'] / 'eval' / 'summary.json').exists() for j in jobs)} already done", flush=True)
        todo = jobs
        while todo:  # jobs another process is running are retried once it has finished
            waiting = []
            with cf.ThreadPoolExecutor(max_workers=max(1, args.workers)) as ex:
                for job, msg in zip(todo, ex.map(lambda j: run_job(j, args.dry_run), todo)):
                    print(msg, flush=True)
                    if "running in another process" in msg:
                        waiting.append(job)
            if waiting:
                time.sleep(30)
            todo = waiting
        if args.dry_run:
            return
    report = cfg.get("report", "scripts/study_report.py")
    if report:  # "report": null -- each job's eval/summary.json is the report
        subprocess.run([sys.executable, str(REPO / report), args.config], check=False, cwd=REPO)


if __name__ == "__main__":
    main()
