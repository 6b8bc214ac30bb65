"""Run ``pluralign`` with a SIGKILL / SIGTERM injected at a chosen point (used by the kill-and-resume tests).

usage: python _killer.py POINT STEP SIGNAL -- pluralign args...
POINT: ``save`` (inside a checkpoint write, after the weights and optimizer, before the RNG and
trainer state), ``step`` (at the end of an optimizer step), ``method`` (eval: after the first
method's results file is written), ``gen`` (softprompt: right after generation STEP's checkpoint is written), ``gensave`` (softprompt:
inside the write of generation STEP's checkpoint, before its rename), ``exit`` (any command: SIGNAL right after the command's work
has returned, during shutdown).
"""

import os
import signal
import sys


def main() -> None:
    point, step, sig = sys.argv[1], int(sys.argv[2]), getattr(signal, sys.argv[3])
    args = sys.argv[sys.argv.index("--") + 1:]

    def die():
        os.kill(os.getpid(), sig)
        if sig == signal.SIGINT:  # Python's SIGINT handler raises KeyboardInterrupt: make it deterministic
            raise KeyboardInterrupt
        if sig != signal.SIGKILL:  # SIGTERM's default action ends the process too; never go on
            os._exit(143)

    if point == "save":
        from pluralign.training.trainer import ConditionalTrainer

        real = ConditionalTrainer._save_rng_state

        def _save_rng_state(self, output_dir):
            if self.state.global_step == step:
                die()
            return real(self, output_dir)

        ConditionalTrainer._save_rng_state = _save_rng_state
    elif point == "step":
        from transformers import TrainerCallback

        from pluralign.training.trainer import ConditionalTrainer

        class Kill(TrainerCallback):
            def on_step_end(self, args, state, control, **kw):
                if state.global_step == step:
                    die()

        real_init = ConditionalTrainer.__init__

        def __init__(self, *a, **kw):
            real_init(self, *a, **kw)
            self.add_callback(Kill())

        ConditionalTrainer.__init__ = __init__
    elif point == "method":
        import pluralign.evaluation.report as report

        real_save = report.save_results
        n = {"saved": 0}

        def save_results(res, path):
            out = real_save(res, path)
            n["saved"] += 1
            if n["saved"] == step:
                die()
            return out

        report.save_results = save_results
    elif point in ("gen", "gensave"):
        import pluralign.blackbox.search as search

        if point == "gen":
            real_save = search._save

            def _save(out, state, *a, **kw):
                real_save(out, state, *a, **kw)
                if state["gen"] == step:
                    die()

            search._save = _save
        else:
            real_write = search.atomic_write_bytes

            def atomic_write_bytes(path, data):
                import pickle

                if path.name == search.CHECKPOINT and pickle.loads(data)["gen"] == step:
                    (path.parent / f".{path.name}.partial").write_bytes(data[: len(data) // 2])  # what a torn write leaves
                    die()
                return real_write(path, data)

            search.atomic_write_bytes = atomic_write_bytes
    elif point == "exit":
        import pluralign.cli.main as cli

        real_guarded = cli.run_guarded

        def run_guarded(fn, *a, **kw):
            out = real_guarded(fn, *a, **kw)
            os.kill(os.getpid(), sig)
            import time

            time.sleep(0.2)  # a handler that is still installed runs here
            return out

        cli.run_guarded = run_guarded
    from pluralign.cli.main import main as entry_point

    sys.argv = ["pluralign", *args]
    entry_point()  # the installed entry point, as a user runs it


if __name__ == "__main__":
    main()
