"""Train a two-tower model, export it, evaluate the export with faiss, compare with baselines.

    python -m dssm_tf.train --flagfile=configs/bce.flags [--data_dir=DIR] [--model_dir=DIR]
                            [--protocol=time_split|leave_last_one_out] [--epochs=N]

Writes `<model_dir>/export/` (SavedModels, see CONTRACT.md), `<model_dir>/metrics.json`,
TensorBoard logs in `<model_dir>/logs` and, while running, a `BackupAndRestore` checkpoint in
`<model_dir>/backup` so a killed run resumes where it stopped.
"""

from __future__ import annotations

import os
import resource

from dssm_tf import errors, evaluation
from dssm_tf import flags as cli
from dssm_tf.itemcf import itemcf_scorer
from dssm_tf.popularity import popularity_scorer

FLAGS = cli.FLAGS


def check_flags() -> None:
    """Cross-flag checks that absl validators cannot express; fail before any heavy work."""
    if FLAGS.loss != "inbatch" and FLAGS.negative_sampler == "inbatch":
        raise errors.InputError("--negative_sampler=inbatch needs --loss=inbatch")
    if FLAGS.loss != "inbatch" and FLAGS.num_negatives < 1:
        raise errors.InputError(f"--num_negatives: --loss={FLAGS.loss} needs at least 1")
    if FLAGS.early_stopping_metric == "recall" and FLAGS.validation_share <= 0:
        raise errors.InputError("--early_stopping_metric=recall needs --validation_share > 0")


def check_data(split) -> None:
    """Flag checks that need the training counts (still before TensorFlow is imported)."""
    if (FLAGS.negative_sampler == "frequency"
            and not (split.movie_counts >= FLAGS.frequent_min_count).any()):
        raise errors.InputError(f"--frequent_min_count={FLAGS.frequent_min_count}: no movie has "
                                f"that many training ratings")


def _table(rows: list[tuple[str, dict]], k: int) -> str:
    keys = [f"recall@{k}", f"recall@{k}_user_mean", f"hit@{k}", f"ndcg@{k}"]
    lines = [f"{'model':<34}" + "".join(f"{key:>22}" for key in keys)]
    lines += [f"{name:<34}" + "".join(f"{result[key]:>22.4f}" for key in keys)
              for name, result in rows]
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    check_flags()
    ml, split = cli.load_split()
    check_data(split)
    # TensorFlow is imported only now, so bad flags and data fail fast with one clean line.
    from dssm_tf import export, trainer
    from dssm_tf.evaluate import evaluate_export, load_export

    model, epochs_run, seconds = trainer.fit(ml, split)
    export_dir = export.export_towers(model.user_tower, model.item_tower,
                                      os.path.join(FLAGS.model_dir, "export"),
                                      trainer.metadata(ml, split))
    k = FLAGS.k
    exported = load_export(export_dir)
    result, _ = evaluate_export(exported, ml, split, k, exclude_seen=True)
    seed_protocol, _ = evaluate_export(exported, ml, split, k, exclude_seen=False)
    baselines = {}
    if FLAGS.baselines:
        baselines = {name: evaluation.evaluate_scorer(split, scorer, k, exclude_seen=True)
                     for name, scorer in (("popularity", popularity_scorer(split)),
                                          ("itemcf", itemcf_scorer(split, FLAGS.neighbors)))}
    rows = [(f"two-tower {FLAGS.loss} (seen excluded)", result),
            (f"two-tower {FLAGS.loss} (seed protocol)", seed_protocol)]
    rows += [(f"{name} (seen excluded)", value) for name, value in baselines.items()]
    print(f"\n{split.protocol}: {result['n_test_users']} test users, "
          f"{result['n_test_items']} test ratings\n{_table(rows, k)}")

    output = dict(result)
    output.update({f"seed_protocol/{key}": value for key, value in seed_protocol.items()
                   if "@" in key})
    for name, value in baselines.items():
        output.update({f"{name}/{key}": v for key, v in value.items() if "@" in key})
    output.update({name: FLAGS[name].value for name in trainer.TRAINING_FLAGS})
    output.update(train_seconds=round(seconds, 2), epochs_run=epochs_run,
                  peak_rss_mb=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                  export_dir=export_dir)
    evaluation.write_json(os.path.join(FLAGS.model_dir, "metrics.json"), output)
    print(f"wrote {os.path.join(FLAGS.model_dir, 'metrics.json')} and {export_dir}")


if __name__ == "__main__":
    errors.run(main)
