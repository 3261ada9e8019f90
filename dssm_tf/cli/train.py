"""Train a two-tower model, export it, evaluate the export with faiss, compare with baselines.

    python -m dssm_tf.train --flagfile=configs/bce.flags [--dataset=NAME] [--data_dir=DIR]
                            [--model_dir=DIR] [--protocol=time_split|leave_last_one_out]
                            [--epochs=N] [--overwrite]

Writes a new version `<model_dir>/export/<version>/` (SavedModels, see docs/CONTRACT.md; the
last `--keep_versions` are kept), `<model_dir>/metrics.json` (the export's metrics at
`--request_time`, each the mean of `--tie_shuffles` passes when it has a history; a timed
export's at the other two request times too, as `request_time=<mode>/<metric>`: `report`),
`<model_dir>/config.json` (the configs and data checksums of the run), TensorBoard logs in
`<model_dir>/logs` and, while running, a `BackupAndRestore` checkpoint in `<model_dir>/backup`,
so a killed run resumes where it stopped when rerun with the same settings (other settings:
exit 2, unless `--overwrite`).
One run at a time per `<model_dir>`: a second one exits 2 naming the first one's pid.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import shutil
import tempfile

import numpy as np

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.config import REQUEST_TIMES, RunConfig
from dssm_tf.data import sequence_settings, splits
from dssm_tf.data.dataset import Dataset
from dssm_tf.errors import ConfigError
from dssm_tf.evaluation.baselines.itemcf import itemcf_scorer
from dssm_tf.evaluation.baselines.popularity import popularity_scorer
from dssm_tf.evaluation.scoring import evaluate_scorer, headline_keys
from dssm_tf.io import check_writable_folder, exclusive_lock, write_json
from dssm_tf.training import distribute, resume

FLAGS = cli.FLAGS
METRICS, EXPORT, LOCK = "metrics.json", "export", ".lock"


def check_data(run: RunConfig, split: splits.Split) -> None:
    """Settings that need the training counts (still before TensorFlow is imported)."""
    sampler = run.sampler
    if (sampler.negative_sampler == "frequency"
            and not (split.item_counts >= sampler.frequent_min_count).any()):
        raise ConfigError("frequent_min_count", f"{sampler.frequent_min_count}: no item has "
                                                f"that many training interactions")


def _table(rows: list[tuple[str, dict]], k: int) -> str:
    keys = headline_keys(k)
    width = max([34] + [len(name) + 2 for name, _ in rows])
    lines = [f"{'model':<{width}}" + "".join(f"{key:>20}" for key in keys)]
    lines += [f"{name:<{width}}" + "".join(f"{result[key]:>20.4f}" for key in keys)
              for name, result in rows]
    return "\n".join(lines)


def report(exported, dataset: Dataset, split: splits.Split, k: int, loss: str,
           request_time: str = "none", tie_shuffles: int = 0,
           baselines: dict[str, dict] | None = None) -> tuple[dict, str]:
    """Evaluate a loaded export for `train`'s report: (the metrics for metrics.json, before the
    run's settings are added; the summary table as printed).

    The headline metrics are asked at `request_time`, the mean of `tie_shuffles` passes
    (`evaluate_export`; the seed protocol's figure, kept for comparison with the seed, takes
    one). An export that reads the request time (``--request_gap``) is also evaluated at the
    other two request times, written as ``request_time=<mode>/<metric>`` and shown as rows
    ``two-tower <loss> (request_time=<mode>)``: ``next`` (HSTU's setting, the held-out
    interaction's own time) is never the headline unless asked for. Other exports give the
    same figure at every request time.
    """
    from dssm_tf.evaluation.exports import evaluate_export  # noqa: PLC0415  (TensorFlow)

    def evaluate(exclude_seen: bool, mode: str, passes: int = tie_shuffles) -> dict:
        return evaluate_export(exported, dataset, split, k, exclude_seen=exclude_seen,
                               request_time=mode, tie_shuffles=passes)[0]

    metrics = evaluate(True, request_time)
    seed_protocol = evaluate(False, request_time, min(tie_shuffles, 1))
    other_times = {}
    if exported.reads_request_time:
        other_times = {mode: evaluate(True, mode) for mode in REQUEST_TIMES
                       if mode != request_time}
    baselines = baselines or {}
    rows = [(f"two-tower {loss} (seen excluded)", metrics),
            (f"two-tower {loss} (seed protocol)", seed_protocol)]
    rows += [(f"two-tower {loss} (request_time={mode})", value)
             for mode, value in other_times.items()]
    rows += [(f"{name} (seen excluded)", value) for name, value in baselines.items()]
    text = (f"\n{dataset.name}, {split.protocol}: {metrics['n_test_users']} test users, "
            f"{metrics['n_test_items']} test interactions\n{_table(rows, k)}")

    output = dict(metrics)
    prefixed = {"seed_protocol": seed_protocol, **baselines}
    prefixed.update({f"request_time={mode}": value for mode, value in other_times.items()})
    for prefix, value in prefixed.items():
        output.update({f"{prefix}/{key}": v for key, v in value.items() if "@" in key})
    return output, text


def main(argv: list[str]) -> None:
    del argv
    run = cli.run_config()
    model_dir = FLAGS.model_dir
    check_writable_folder(model_dir, "model_dir")
    dataset = cli.load_data(run.data)
    split = splits.make_split(dataset, run.split)
    # What the run really used: absolute data paths, the cutoff the split took, the sequence
    # settings derived from the data.
    run = dataclasses.replace(run, data=dataset.config, split=splits.resolve(dataset, run.split))
    run, derived = sequence_settings.derive(run, split.user_offsets)
    if derived:
        print(derived)
    check_data(run, split)
    record = resume.run_record(run, dataset)
    if not distribute.is_chief(run.training.distribution):
        train(run, dataset, split, model_dir, record, chief=False)  # the chief owns model_dir
        return
    with exclusive_lock(os.path.join(model_dir, LOCK), "model_dir"):  # one run per model_dir
        if FLAGS.overwrite:
            resume.clear(model_dir)
        resume.check(model_dir, record)
        train(run, dataset, split, model_dir, record)


def train(run: RunConfig, dataset: Dataset, split: splits.Split, model_dir: str,
          record: dict, chief: bool = True) -> None:
    """Fit, export, evaluate and report; TensorFlow starts only now, so bad flags and data
    have failed fast with one clean line. A multi-worker run's other workers train and save
    with the chief (saving may need them), into a scratch folder, and report nothing."""
    app.start_tensorflow()
    from dssm_tf.serving import contract, export  # noqa: PLC0415
    from dssm_tf.serving.loaded import load_export  # noqa: PLC0415
    from dssm_tf.training import trainer  # noqa: PLC0415

    if chief:
        resume.write(model_dir, record)
    result = trainer.fit(run, dataset, split, model_dir)
    export_root = os.path.join(model_dir, EXPORT) if chief else tempfile.mkdtemp()
    export_dir = export.export_towers(
        result.model.user_tower, result.model.item_tower, export_root,
        contract.build_metadata(run, dataset, split, trainer.versions()),
        keep_versions=FLAGS.keep_versions,
        candidates=contract.item_inputs(dataset, np.flatnonzero(split.candidates)))
    if not chief:
        shutil.rmtree(export_root, ignore_errors=True)
        return
    k = FLAGS.k
    exported = load_export(export_dir)
    baselines = {}
    if FLAGS.baselines:
        baselines = {name: evaluate_scorer(split, scorer, k, exclude_seen=True)
                     for name, scorer in (("popularity", popularity_scorer(split)),
                                          ("itemcf", itemcf_scorer(split, FLAGS.neighbors)))}
    output, text = report(exported, dataset, split, k, run.loss.loss, FLAGS.request_time,
                          FLAGS.tie_shuffles, baselines)
    print(text)
    output.update(run.flat())
    output.update(train_seconds=round(result.seconds, 2), epochs_run=result.epochs_run,
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  export_dir=export_dir, export_version=int(os.path.basename(export_dir)))
    write_json(os.path.join(model_dir, METRICS), output)
    print(f"wrote {os.path.join(model_dir, METRICS)} and {export_dir}")


if __name__ == "__main__":
    app.run(main)
