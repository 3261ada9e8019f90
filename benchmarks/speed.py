"""Speed checks on real data: loading, itemCF, the input pipeline, training steps, evaluation.

    python -m benchmarks.speed [--dataset ... --data_dir=DIR] [--output=speed.json]
                               [--export_dir=DIR] [--speed_batches=200] [--speed_steps=100]

Measures in this process and prints one row per figure (what, value, target, ok?):

- the data set's load time (`dssm_tf.data.sources.load_dataset`), target ≤ 2 s (ML-1M);
- itemCF similarity + top-K lists for all test users of each protocol (`itemcf_scorer` +
  `scoring.evaluate_scorer`), target ≤ 3 s. These two are best of two runs: the first
  pays for a cold disk cache and first-touch page faults (the JSON keeps it too);
- the tf.data pipeline's production rate (`pipeline.training_dataset`, frequency sampler,
  3 negatives, batch 1024) with history length 50 and 0, in examples/s, against the training
  step rate of the model built as `train` builds it (tower flags, `--loss` except
  inbatch, `--optimizer`), timed on cached batches of the same pipeline (pure step cost) and
  fed live by the pipeline (what `fit` sees: both share the CPUs); target: the pipeline
  alone outpaces the step on cached batches;
- `evaluate_export` on all users (leave_last_one_out) for `--export_dir`, or
  for an export of the model just timed (history length 50; its metrics mean nothing): one
  pass in the data's order (the time of one evaluation, not `--tie_shuffles` of them), a
  timed export asked at `--request_time`;
- the one-piece retrieval model of that export: latency at batch 1 (p50, p99) and
  throughput at batch 256, top-10 with the history excluded (`--request_time` fed as
  `evaluate` feeds it).

Timings exclude TensorFlow's import. Exit status 0 even if a target is missed (the table says
so): speed depends on the machine.
"""

from __future__ import annotations

import dataclasses
import math
import os
import platform
import sys
import tempfile
import time

import numpy as np

import dssm_tf
from dssm_tf import config
from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.config import RunConfig, SplitConfig
from dssm_tf.data.dataset import Dataset
from dssm_tf.data.splits import make_split
from dssm_tf.evaluation.baselines.itemcf import itemcf_scorer
from dssm_tf.evaluation.scoring import evaluate_scorer
from dssm_tf.io import check_writable_file, write_json
from dssm_tf.serving import contract

FLAGS = cli.FLAGS
BATCH_SIZE = 1024
NUM_NEGATIVES = 3
HISTORY_LENGTHS = (50, 0)
WARMUP_BATCHES = 20
CACHED_BATCHES = 20
LOAD_TARGET_S = 2.0
ITEMCF_TARGET_S = 3.0
EVALUATE_TARGET_S = 10.0


class Table:
    def __init__(self):
        self.rows: list[dict] = []

    def add(self, what: str, value: float, unit: str, target: str = "", ok: bool | None = None,
            **extra) -> None:
        self.rows.append(dict(what=what, value=value, unit=unit, target=target, ok=ok, **extra))
        sys.stderr.write(f"  {what}: {_number(value)} {unit}\n")
        sys.stderr.flush()

    def render(self) -> str:
        cells = [("what", "value", "target", "ok?")] + [
            (r["what"], f"{_number(r['value'])} {r['unit']}", r["target"],
             "" if r["ok"] is None else ("yes" if r["ok"] else "NO")) for r in self.rows]
        widths = [max(len(c[i]) for c in cells) for i in range(4)]
        lines = ["  ".join(c[i].ljust(widths[i]) if i != 1 else c[i].rjust(widths[i])
                           for i in range(4)).rstrip() for c in cells]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)


def _number(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}" if value < 10 else f"{value:.1f}"


def time_load(table: Table) -> Dataset:
    times = []
    for _ in range(2):
        start = time.perf_counter()
        dataset = cli.load_data()
        times.append(time.perf_counter() - start)
    best = min(times)
    table.add(f"{dataset.name} load ({len(dataset.interactions):,} interactions), best of 2",
              best, "s", f"<= {LOAD_TARGET_S:g} s", best <= LOAD_TARGET_S,
              first_seconds=times[0])
    return dataset


def time_itemcf(splits: dict, table: Table, k: int, neighbors: int) -> None:
    for protocol, split in splits.items():
        times = []
        for _ in range(2):
            start = time.perf_counter()
            scorer = itemcf_scorer(split, neighbors)
            result = evaluate_scorer(split, scorer, k, exclude_seen=True)
            times.append(time.perf_counter() - start)
        best = min(times)
        table.add(f"itemCF sim + top-{k} for {result['n_test_users']:,} users "
                  f"({protocol}), best of 2", best, "s", f"<= {ITEMCF_TARGET_S:g} s",
                  best <= ITEMCF_TARGET_S, first_seconds=times[0])


def timed_run(run: RunConfig, history_length: int) -> RunConfig:
    """`run` as timed: frequency sampler, NUM_NEGATIVES negatives, batch BATCH_SIZE, history
    `history_length`; `inbatch` is timed as `bce`, since its negatives come from the batch."""
    return dataclasses.replace(
        run, tower=dataclasses.replace(run.tower, history_length=history_length),
        sampler=dataclasses.replace(run.sampler, negative_sampler="frequency",
                                    num_negatives=NUM_NEGATIVES),
        loss=dataclasses.replace(run.loss, loss="bce" if run.loss.loss == "inbatch"
                                 else run.loss.loss),
        training=dataclasses.replace(run.training, batch_size=BATCH_SIZE))


def pipeline_rate(stream, batches: int) -> float:
    """Examples/s the pipeline produces when nothing else runs."""
    iterator = iter(stream)
    for _ in range(WARMUP_BATCHES):
        next(iterator)
    start = time.perf_counter()
    examples = 0
    for _ in range(batches):
        examples += int(next(iterator)["positive_item"].shape[0])
    return examples / (time.perf_counter() - start)


def step_rate(model, stream, steps: int, cached: bool, per_call: int) -> float:
    """Examples/s of Keras' own train function (as `fit` calls it, `per_call` steps a call),
    on cached batches of `stream` (the step alone) or fed live by it."""
    source = stream.take(CACHED_BATCHES).cache().repeat() if cached else stream
    iterator = iter(source)
    train_function = model.make_train_function(force=True)
    logs = None
    for _ in range(math.ceil(WARMUP_BATCHES / per_call)):
        logs = train_function(iterator)
    float(logs["loss"])
    calls = math.ceil(steps / per_call)
    start = time.perf_counter()
    for _ in range(calls):
        logs = train_function(iterator)
    float(logs["loss"])  # wait for the last step
    return calls * per_call * BATCH_SIZE / (time.perf_counter() - start)


def time_training(run: RunConfig, dataset: Dataset, split, table: Table):
    """Pipeline and step rates per history length; returns (model, run) of the first."""
    from dssm_tf.data.pipeline import training_dataset  # noqa: PLC0415  (TensorFlow)
    from dssm_tf.training import trainer  # noqa: PLC0415

    kept = None
    for history_length in HISTORY_LENGTHS:
        timed = timed_run(run, history_length)
        pipeline = trainer.make_pipeline(timed, dataset, split)
        rows = np.arange(len(split.train), dtype=np.int64)
        stream = training_dataset(pipeline.tables, rows, pipeline.sampler, NUM_NEGATIVES,
                                  BATCH_SIZE, timed.training.seed)
        produced = pipeline_rate(stream, FLAGS.speed_batches)
        model = trainer.build_model(timed, dataset, split, pipeline)
        model(next(iter(stream)))
        per_call = timed.training.steps_per_execution
        step = step_rate(model, stream, FLAGS.speed_steps, cached=True, per_call=per_call)
        fed = step_rate(model, stream, FLAGS.speed_steps, cached=False, per_call=per_call)
        label = f"L={history_length}, batch {BATCH_SIZE}, {NUM_NEGATIVES} neg"
        table.add(f"tf.data negatives pipeline ({label})", produced, "ex/s",
                  f">= 5 x train step ({_number(5 * step)})", produced >= 5 * step)
        table.add(f"train step, cached batches ({timed.loss.loss}, {label})", step, "ex/s")
        table.add(f"train step fed by the pipeline ({label})", fed, "ex/s")
        if kept is None:
            kept = (model, timed)
    return kept


def time_serving(version_dir: str, dataset: Dataset, split, table: Table,
                 calls: int = 300, batch: int = 256) -> None:
    """Latency of the one-piece retrieval model at batch 1 (p50, p99 over `calls` calls) and
    its throughput at batch `batch`, top-10 with the history excluded, as a server calls it."""
    import tensorflow as tf  # noqa: PLC0415

    from dssm_tf.serving.loaded import load_retrieval  # noqa: PLC0415

    loaded = load_retrieval(version_dir)
    if loaded is None:
        return
    serve = loaded[0]
    users = split.test_users
    width = max(int(split.user_offsets[-1] // max(len(users), 1)), 1)  # a typical history

    timed = contract.is_timed(contract.read_metadata(version_dir))

    def feed(chosen):
        inputs = contract.user_inputs(dataset, split, chosen, width, timed,
                                      FLAGS.request_time)
        return {name: tf.constant(value) for name, value in inputs.items()}

    rng = np.random.default_rng(0)
    singles = [feed(rng.choice(users, 1)) for _ in range(calls)]
    k, exclude = tf.constant(10), tf.constant(True)
    for inputs in singles[:20]:  # warm-up (tracing, caches)
        serve(**inputs, k=k, exclude_history=exclude)
    seconds = []
    for inputs in singles:
        start = time.perf_counter()
        serve(**inputs, k=k, exclude_history=exclude)["item_keys"].numpy()
        seconds.append(time.perf_counter() - start)
    p50, p99 = np.percentile(np.array(seconds) * 1000, [50, 99])
    table.add(f"retrieval model latency, batch 1, top-10, p50 (history {width})", p50, "ms")
    table.add(f"retrieval model latency, batch 1, top-10, p99 (history {width})", p99, "ms")
    batched = feed(rng.choice(users, batch))
    serve(**batched, k=k, exclude_history=exclude)
    start = time.perf_counter()
    rounds = 20
    for _ in range(rounds):
        serve(**batched, k=k, exclude_history=exclude)["item_keys"].numpy()
    rate = rounds * batch / (time.perf_counter() - start)
    table.add(f"retrieval model throughput, batch {batch}, top-10", rate, "users/s")


def time_evaluation(dataset: Dataset, split, table: Table, k: int, model=None,
                    run: RunConfig | None = None) -> None:
    """evaluate_export over every test user; then the retrieval model's serving speed."""
    from dssm_tf.evaluation.exports import evaluate_export  # noqa: PLC0415
    from dssm_tf.serving import export  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="dssm_tf-speed-") as tmp:
        export_dir = FLAGS.export_dir
        source = export_dir
        if not export_dir:
            metadata = contract.build_metadata(run, dataset, split, versions={})
            export_dir = export.export_towers(
                model.user_tower, model.item_tower, os.path.join(tmp, "export"), metadata,
                candidates=contract.item_inputs(dataset, np.flatnonzero(split.candidates)))
            source = f"model above, L={run.tower.history_length}"
        start = time.perf_counter()
        result, _ = evaluate_export(export_dir, dataset, split, k=k, exclude_seen=True,
                                    request_time=FLAGS.request_time, tie_shuffles=0)
        seconds = time.perf_counter() - start
        table.add(f"evaluate_export, {result['n_test_users']:,} users, top-{k} ({source})",
                  seconds, "s", f"<= {EVALUATE_TARGET_S:g} s", seconds <= EVALUATE_TARGET_S,
                  retrieval_seconds=result.get("seconds"))
        time_serving(result["export_dir"], dataset, split, table)


def main(argv: list[str]) -> None:
    del argv
    table = Table()
    run = cli.run_config()
    if FLAGS.output:
        check_writable_file(FLAGS.output, "output")
    if FLAGS.export_dir:
        contract.check_export(contract.resolve_export(FLAGS.export_dir, FLAGS.version))
    dataset = time_load(table)
    sys.stderr.write(f"benchmarks.speed on {dataset.name} in {dataset.data_dir} "
                     f"({os.cpu_count()} CPUs)\n")
    splits = {p: make_split(dataset, SplitConfig(protocol=p, cutoff=run.split.cutoff))
              for p in config.PROTOCOLS}
    time_itemcf(splits, table, FLAGS.k, FLAGS.neighbors)

    start = time.perf_counter()
    app.start_tensorflow()
    import tensorflow as tf  # noqa: PLC0415
    table.add("TensorFlow start-up (not in the timings)", time.perf_counter() - start, "s")
    split = splits[config.LEAVE_LAST_ONE_OUT]  # every user is a test user
    model, timed = time_training(run, dataset, split, table)
    timed = dataclasses.replace(timed, data=dataset.config,
                                split=SplitConfig(protocol=config.LEAVE_LAST_ONE_OUT))
    time_evaluation(dataset, split, table, FLAGS.k, model, timed)

    print(table.render())
    missed = [r["what"] for r in table.rows if r["ok"] is False]
    if missed:
        sys.stderr.write(f"{len(missed)} target(s) missed: {'; '.join(missed)}\n")
    if FLAGS.output:
        write_json(FLAGS.output, {
            "rows": table.rows, "dataset": dataset.name, "data_dir": dataset.data_dir,
            "cpu_count": os.cpu_count(), "platform": platform.platform(),
            "versions": {"dssm_tf": dssm_tf.__version__, "tensorflow": tf.__version__,
                         "numpy": np.__version__}})
        sys.stderr.write(f"wrote {FLAGS.output}\n")


if __name__ == "__main__":
    app.run(main)
