"""Evaluate an exported two-tower model from its SavedModels alone (no training code path).

    python -m dssm_tf.evaluate --export_dir=runs/bce/export [--k=50] [--exclude_seen]
                               [--index=flat|ivf|hnsw] [--protocol] [--cutoff] [--output=FILE]
                               [--request_time=none|last|next] [--tie_shuffles=3]

The data is the one `metadata.json` records (still where it was), unless the data flags say
otherwise; the split is the one the export was trained under unless `--protocol`/`--cutoff`
override it (with a warning). A timed export is asked at `--request_time` (default none:
unknown); an export with a history is evaluated `--tie_shuffles` times, a user's same-second
training interactions in another order each time, and the metrics are the mean
(`dssm_tf.evaluation.exports`). Prints the metrics JSON (docs/CONTRACT.md) and writes it to
`--output`.
"""

from __future__ import annotations

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.evaluation.exports import evaluate_export, split_for_export
from dssm_tf.io import check_writable_file
from dssm_tf.retrieval.index import config_params, index_params
from dssm_tf.serving import contract
from dssm_tf.serving.loaded import load_export

FLAGS = cli.FLAGS


def checked_index(split):
    """The --index config, its parameters checked against the split's candidate count (before
    TensorFlow starts)."""
    index = cli.index_config()
    index_params(index.index, int(split.candidates.sum()), **config_params(index))
    return index


def main(argv: list[str]) -> None:
    del argv
    # Everything that can be checked without TensorFlow is, first: bad input fails fast, in
    # one line, and nothing is computed for an output that cannot be written.
    if FLAGS.output:
        check_writable_file(FLAGS.output, "output")
    export_dir = contract.resolve_export(FLAGS.export_dir, FLAGS.version)
    metadata = contract.check_export(export_dir)
    dataset = cli.data_for_export(metadata)
    split = split_for_export(dataset, metadata, *cli.protocol_override())
    index = checked_index(split)
    app.start_tensorflow()
    export = load_export(export_dir)
    result, _ = evaluate_export(export, dataset, split, FLAGS.k, FLAGS.exclude_seen, index,
                                batch_size=FLAGS.embed_batch_size,
                                request_time=FLAGS.request_time,
                                tie_shuffles=FLAGS.tie_shuffles)
    app.report(result, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
