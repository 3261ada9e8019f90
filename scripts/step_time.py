"""Time the training step of a configuration alone: milliseconds a step and peak memory.

    python scripts/step_time.py STEPS --flagfile=configs/sequence.flags --data_dir=$ML \
        --protocol=leave_last_one_out [any train flag]

Builds the pipeline and model `train` would (sequence settings given explicitly: this script
derives none), runs 64 warm-up steps (tracing), then times STEPS steps of `model.fit` and prints
ms a step, the epoch it implies, the peak RSS and the CPU time a step (less sensitive than the
wall time to other jobs on the machine). No validation, export or evaluation: the figure is the
step's own (BUILD_NOTES.md, issue 21).
"""

from __future__ import annotations

import resource
import sys
import time

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.data import sequence_settings, splits


def main() -> None:
    steps = int(sys.argv[1])
    cli.FLAGS(["step_time", *sys.argv[2:]])
    run = cli.run_config()
    dataset = cli.load_data(run.data)
    split = splits.make_split(dataset, run.split)
    run, _ = sequence_settings.derive(run, split.user_offsets)
    app.start_tensorflow()
    from dssm_tf.training import trainer  # noqa: PLC0415  (TensorFlow)

    pipeline = trainer.make_pipeline(run, dataset, split)
    model = trainer.build_model(run, dataset, split, pipeline)
    model(pipeline.first_batch())
    stream = pipeline.training()
    model.fit(stream, epochs=1, steps_per_epoch=64, verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    model.fit(stream, epochs=1, steps_per_epoch=steps, verbose=0)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"{steps} steps: {seconds / steps * 1000:.0f} ms a step, an epoch of "
          f"{pipeline.steps_per_epoch} steps ~{seconds / steps * pipeline.steps_per_epoch:.0f} s, "
          f"peak {peak:.2f} GB, {cpu / steps * 1000:.0f} CPU ms a step")


if __name__ == "__main__":
    main()
