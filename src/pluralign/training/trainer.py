"""Conditional SFT on the transformers :class:`~transformers.Trainer`.

Why the plain ``Trainer`` with an overridden ``compute_loss`` rather than TRL's ``SFTTrainer``:
our supervision is ONE label token per row (hard) or a distribution over the option label tokens
(soft), read at the answer position only; ``SFTTrainer`` is built around token-level language-model
loss on text completions (it tokenises and masks text itself and has no soft-label loss), and it
does not forward per-sample extra arguments such as ``profile_embeds`` to the model. The
``Trainer`` gives everything else unchanged: AdamW, warm-up + cosine schedule, gradient
accumulation, bf16 autocast, checkpoints with optimizer / scheduler / RNG state and resume,
progress bar, logging, and multi-GPU / multi-process data parallelism through accelerate
(``accelerate launch -m pluralign.cli.main train ...``).

Checkpoints hold only the trainable parameters (the adapter, or every weight for ``full``), so a
checkpoint of a LoRA run on an 8B model is megabytes, not gigabytes. They are written atomically:
into ``checkpoints/.staging/checkpoint-N``, flushed, then renamed to ``checkpoints/checkpoint-N``, so a
crash (even SIGKILL) during a save leaves the earlier checkpoints complete and resumable. Each also
holds ``pluralign_state.json``: the loss sum and seconds of the run so far, so a resumed run reports
the train loss and time of the whole run, as an uninterrupted one does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
from transformers import Trainer, TrainerCallback
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from pluralign.training.losses import answer_logits, option_logprobs, option_mass_nll, soft_cross_entropy

TRAINABLE_FILE = "trainable.safetensors"
#: run totals (loss sum, seconds) carried across resumptions
RUN_STATE_FILE = "pluralign_state.json"
TRAINER_STATE_FILE = "trainer_state.json"
STAGING = ".staging"
#: what a checkpoint must hold to be resumed (optimizer / scheduler: unless save_only_model)
CHECKPOINT_FILES = (TRAINABLE_FILE, TRAINER_STATE_FILE)


from pluralign.errors import PluralignError


class RunFinished(PluralignError):
    """``--resume`` of a run that already ended: nothing is trained and nothing is written. The
    CLI prints the message as a note and exits 0."""

    def __init__(self, out: str | Path, summary: dict):
        self.summary = summary
        loss = summary.get("train_loss")
        loss = f", train loss {loss:.4f}" if isinstance(loss, (int, float)) else ""
        super().__init__(
            f"this run is finished ({summary.get('steps')} of {summary.get('max_steps')} steps{loss}); nothing to resume, "
            "nothing changed (train longer with a new --out)", file=out,
        )


def checkpoint_problem(path: str | Path) -> str | None:
    """Why the folder ``path`` is not a complete, resumable checkpoint (None when it is)."""
    path = Path(path)
    for f in (*CHECKPOINT_FILES, "optimizer.pt", "scheduler.pt"):
        if not (path / f).is_file():
            return f"no {f}"
    try:
        state = json.loads((path / TRAINER_STATE_FILE).read_text(encoding="utf-8"))
        int(state["global_step"])
    except (OSError, ValueError, KeyError, TypeError):
        return f"unreadable {TRAINER_STATE_FILE}"
    from pluralign.adapters.checkpoint import torch_file_problem

    for f in ("optimizer.pt", "scheduler.pt"):  # a truncated state would fail deep inside the Trainer's resume
        why = torch_file_problem(path / f)
        if why:
            return f"{f}: {why}"
    return None


def checkpoint_step(path: str | Path) -> int:
    return int(json.loads((Path(path) / TRAINER_STATE_FILE).read_text(encoding="utf-8"))["global_step"])


def find_resumable(ckdir: str | Path) -> tuple[str | None, list[tuple[str, str]]]:
    """The newest complete ``checkpoint-N`` under ``ckdir`` and the newer ones passed over as
    incomplete (``[(name, why)]``), newest first."""
    import re

    ckdir = Path(ckdir)
    found = []
    if ckdir.is_dir():
        for d in ckdir.iterdir():
            m = re.fullmatch(r"checkpoint-(\d+)", d.name)
            if m and d.is_dir():
                found.append((int(m.group(1)), d))
    skipped: list[tuple[str, str]] = []
    for _, d in sorted(found, key=lambda t: t[0], reverse=True):
        why = checkpoint_problem(d)
        if why is None:
            return str(d), skipped
        skipped.append((d.name, why))
    return None, skipped


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().to("cpu").contiguous().clone() for n, p in model.named_parameters() if p.requires_grad}


class ConditionalTrainer(Trainer):
    """``Trainer`` whose loss is the (soft-label) cross-entropy of the answer label token.

    Batch keys (see :class:`pluralign.training.data.ConditionalCollator`): ``input_ids``,
    ``attention_mask``, ``option_ids``, ``option_mask``, ``target_probs`` and, for
    profile-routed adapters, ``profile_embeds`` (passed to the model's forward). An ``aux_loss``
    returned by the model (MoE load balancing, already scaled) is added to the loss.
    """

    def __init__(self, *args, soft_label_norm: str = "vocab", option_mass_weight: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.soft_label_norm = soft_label_norm
        self.option_mass_weight = float(option_mass_weight)
        self.model_accepts_loss_kwargs = False  # our loss is a per-batch mean: Trainer divides by GA steps
        self._acc: dict[str, list[float]] = defaultdict(list)
        # log records go to stderr (stdout is for results), and the start of training is announced
        if self.pop_callback(PrinterCallback) is not None:
            self.add_callback(StderrPrinter())
        if self.pop_callback(ProgressCallback) is not None:
            self.add_callback(StderrProgress())
        self.add_callback(StartNotice())
        self._prior = {"loss_sum": 0.0, "seconds": 0.0, "step": 0}
        self._t_start = time.perf_counter()

    def train(self, *args, **kwargs):
        # gradients on whatever the caller did before (an evaluation in the same process may have
        # switched autograd off globally with torch.set_grad_enabled(False))
        self._prior = {"loss_sum": 0.0, "seconds": 0.0, "step": 0}
        self._t_start = time.perf_counter()
        ckpt = kwargs.get("resume_from_checkpoint", args[0] if args else None)
        if isinstance(ckpt, (str, Path)) and self.args.max_steps > 0 and checkpoint_problem(ckpt) is None \
                and checkpoint_step(ckpt) >= self.args.max_steps:
            return self._restore_final(str(ckpt))
        with torch.enable_grad():
            return super().train(*args, **kwargs)

    def _restore_final(self, ckpt: str):
        """A checkpoint at the last step (the run ended before its adapter was saved): restore
        it instead of training (the Trainer would run one step past ``max_steps``)."""
        from transformers.trainer_callback import TrainerState
        from transformers.trainer_utils import TrainOutput

        self._load_from_checkpoint(ckpt)
        self.state = TrainerState.load_from_json(os.path.join(ckpt, TRAINER_STATE_FILE))
        loss = float(self._prior["loss_sum"]) / max(int(self.state.global_step), 1)
        self._total_loss_scalar, self._tr_loss = 0.0, torch.tensor(0.0)
        return TrainOutput(self.state.global_step, loss, {"train_loss": loss})

    # ------------------------------------------------------------------ whole-run totals (across resumptions)
    def _loss_sum_so_far(self) -> float:
        live = getattr(self, "_tr_loss", None)
        live = float(live.item()) if torch.is_tensor(live) else 0.0
        return float(self._prior["loss_sum"]) + float(getattr(self, "_total_loss_scalar", 0.0)) + live

    def run_totals(self, result=None) -> dict:
        """Train loss (mean per optimizer step) and seconds of the WHOLE run, including the part
        before a resumption: what an uninterrupted run reports."""
        steps = int(self.state.global_step)
        if result is not None and not self._prior["step"]:
            loss = float(result.training_loss)  # not resumed: the Trainer's own figure
        else:
            # after train() returned, the Trainer's own loss sum is already drained into result
            resumed = steps - int(self._prior["step"])
            part = float(result.training_loss) * resumed if result is not None else self._loss_sum_so_far()
            loss = (float(self._prior["loss_sum"]) + part) / max(steps, 1)
        return {
            "train_loss": loss,
            "seconds": float(self._prior["seconds"]) + (time.perf_counter() - self._t_start),
            "resumed_at_step": int(self._prior["step"]) or None,
        }

    # ------------------------------------------------------------------ loss
    @staticmethod
    def forward_extra(inputs: dict) -> dict:
        return {"profile_embeds": inputs["profile_embeds"]} if "profile_embeds" in inputs else {}

    def record(self, name: str, value) -> None:
        self._acc[name].append(float(value.detach()) if torch.is_tensor(value) else float(value))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        logits, aux = answer_logits(model, inputs, self.forward_extra(inputs))
        lp = option_logprobs(logits, inputs["option_ids"], inputs["option_mask"], self.soft_label_norm)
        loss = soft_cross_entropy(lp, inputs["target_probs"])
        self.record("ce", loss)
        if self.option_mass_weight:  # keep the next-token mass on the labels (the model says its answer)
            mass_nll = option_mass_nll(logits, inputs["option_ids"], inputs["option_mask"])
            self.record("option_mass", torch.exp(-mass_nll.detach()))
            loss = loss + self.option_mass_weight * mass_nll
        if aux is not None and torch.is_tensor(aux):
            self.record("aux_loss", aux)
            loss = loss + aux.to(loss.dtype)
        return (loss, {"logits": logits}) if return_outputs else loss

    def log(self, logs: dict, start_time=None) -> None:
        for k, v in self._acc.items():
            if v:
                logs[k] = round(sum(v) / len(v), 6)
        self._acc.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ checkpoints: trainable weights only
    def _save(self, output_dir: str | None = None, state_dict: dict | None = None) -> None:
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        if not self.args.should_save:
            return
        from safetensors.torch import save_file

        os.makedirs(output_dir, exist_ok=True)
        model = self.accelerator.unwrap_model(self.model, keep_torch_compile=False)
        tmp = os.path.join(output_dir, f".{TRAINABLE_FILE}.tmp")
        save_file(trainable_state(model), tmp, metadata={"format": "pt"})
        from pluralign.io import _umask

        os.chmod(tmp, 0o666 & ~_umask())  # as a plain open() would create it
        os.replace(tmp, os.path.join(output_dir, TRAINABLE_FILE))
        torch.save(self.args, os.path.join(output_dir, "training_args.bin"))

    def _save_checkpoint(self, model, trial) -> None:
        """Atomic checkpoint: the Trainer writes ``checkpoint-N`` inside ``.staging/``; when every
        file is flushed the folder is renamed into place, then old checkpoints are rotated."""
        from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

        run_dir = self._get_output_dir(trial=trial)
        staging_root = os.path.join(run_dir, STAGING)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staged, final = os.path.join(staging_root, name), os.path.join(run_dir, name)
        if self.args.should_save and os.path.exists(staged):
            shutil.rmtree(staged)  # left by a crash
        self._wait()
        limit = self.args.save_total_limit
        real_get = self._get_output_dir
        self._get_output_dir = lambda trial=None: staging_root  # the Trainer writes (and rotates) in the staging folder
        self.args.save_total_limit = None
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._get_output_dir = real_get
            self.args.save_total_limit = limit
        if self.args.should_save:
            from pluralign.io import atomic_write_json

            atomic_write_json(os.path.join(staged, RUN_STATE_FILE), {
                "loss_sum": self._loss_sum_so_far(),
                "seconds": float(self._prior["seconds"]) + (time.perf_counter() - self._t_start),
                "step": int(self.state.global_step),
            })
        self._wait()  # every process has written its RNG state
        if self.args.should_save:
            from pluralign.io import fsync_tree, replace_dir, _fsync_dir

            fsync_tree(staged)
            replace_dir(staged, final)
            _fsync_dir(run_dir)
            shutil.rmtree(staging_root, ignore_errors=True)
            if limit:
                rotate_complete(run_dir, limit)
        self._wait()

    def _wait(self) -> None:
        if self.args.world_size > 1:
            self.accelerator.wait_for_everyone()

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        from safetensors.torch import load_file

        from pluralign.errors import PluralignError

        model = model if model is not None else self.model
        f = os.path.join(resume_from_checkpoint, TRAINABLE_FILE)
        if not os.path.isfile(f):
            raise PluralignError("not a pluralign checkpoint (no trainable.safetensors)", file=resume_from_checkpoint)
        rs = os.path.join(resume_from_checkpoint, RUN_STATE_FILE)
        if os.path.isfile(rs):
            try:
                with open(rs, encoding="utf-8") as fh:
                    d = json.load(fh)
                self._prior = {"loss_sum": float(d["loss_sum"]), "seconds": float(d["seconds"]), "step": int(d["step"])}
            except (OSError, ValueError, KeyError, TypeError):
                pass
        try:
            sd = load_file(f)
        except Exception as e:  # a truncated or foreign file
            raise PluralignError(f"unreadable checkpoint weights ({type(e).__name__}: {e})", file=f) from None
        own = {n: p for n, p in model.named_parameters() if p.requires_grad}
        missing, unexpected = set(own) - set(sd), set(sd) - set(own)
        if missing or unexpected:
            bad = sorted(missing or unexpected)[0]
            raise PluralignError(
                f"checkpoint does not match this model/config ({len(missing)} missing, {len(unexpected)} unexpected parameters, e.g. {bad})",
                file=resume_from_checkpoint,
            )
        with torch.no_grad():
            for n, p in own.items():
                if tuple(sd[n].shape) != tuple(p.shape):
                    raise PluralignError(f"checkpoint parameter {n} has shape {tuple(sd[n].shape)}, model has {tuple(p.shape)}", file=resume_from_checkpoint)
                p.copy_(sd[n].to(p.device, p.dtype))

    def _load_best_model(self) -> None:  # pragma: no cover - we never select a best model
        return None


def rotate_complete(run_dir: str | Path, limit: int) -> None:
    """Keep the ``limit`` newest complete checkpoints; remove older ones, and incomplete ones
    (left by a crash of older versions) below the newest complete one."""
    import re

    run_dir = Path(run_dir)
    cks = []
    for d in run_dir.iterdir():
        m = re.fullmatch(r"checkpoint-(\d+)", d.name)
        if m and d.is_dir():
            cks.append((int(m.group(1)), d, checkpoint_problem(d) is None))
    complete = sorted((n, d) for n, d, ok in cks if ok)
    if not complete:
        return
    newest = complete[-1][0]
    doomed = [d for _, d in complete[:-limit]] + [d for n, d, ok in cks if not ok and n < newest]
    for d in doomed:
        shutil.rmtree(d, ignore_errors=True)


class StderrPrinter(PrinterCallback):
    """The Trainer's log dicts (without a progress bar), on stderr."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and logs:
            logs = {k: v for k, v in logs.items() if k != "total_flos"}
            print(logs, file=sys.stderr, flush=True)


class StderrProgress(ProgressCallback):
    """The Trainer's progress bar (stderr) with its log dicts on stderr too, not stdout."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.is_world_process_zero and self.training_bar is not None and logs:
            from tqdm.auto import tqdm

            logs = {k: v for k, v in logs.items() if k != "total_flos"}
            tqdm.write(str(logs), file=sys.stderr)


class StartNotice(TrainerCallback):
    """One line on stderr when training starts (before the first step, which may take a while)."""

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            at = f", resuming at step {state.global_step}" if state.global_step else ""
            print(f"training: {state.max_steps} steps{at}", file=sys.stderr, flush=True)


class JsonlLogger(TrainerCallback):
    """Appends every log record (step, epoch, loss, learning rate, ...) as one JSON line. When
    training (re)starts, records past the starting step (written by a run that crashed after its
    last checkpoint) are dropped, so the log reads as one uninterrupted run."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def on_train_begin(self, args, state, control, **kwargs):
        if not state.is_world_process_zero or not self.path.exists():
            return
        keep = []
        for line in self.path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                if int(json.loads(line).get("step", 0)) <= state.global_step:
                    keep.append(line)
            except (ValueError, AttributeError, TypeError):
                continue
        if state.global_step == 0:
            keep = []
        from pluralign.io import atomic_write_text

        atomic_write_text(self.path, "".join(l + "\n" for l in keep))

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rec = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float, str))}}
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec) + "\n")
