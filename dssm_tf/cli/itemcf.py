"""The itemCF baseline on a split: metrics JSON.

    python -m dssm_tf.itemcf [--dataset ...] [--protocol=leave_last_one_out] [--k=50]
                             [--neighbors=50] [--exclude_seen] [--output=FILE]
"""

from __future__ import annotations

import time

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.data.splits import make_split
from dssm_tf.evaluation.baselines.itemcf import itemcf_scorer
from dssm_tf.evaluation.scoring import evaluate_scorer
from dssm_tf.io import check_writable_file

FLAGS = cli.FLAGS


def main(argv: list[str]) -> None:
    del argv
    if FLAGS.output:
        check_writable_file(FLAGS.output, "output")
    dataset = cli.load_data()
    split = make_split(dataset, cli.split_config())
    start = time.perf_counter()
    scorer = itemcf_scorer(split, FLAGS.neighbors)
    result = evaluate_scorer(split, scorer, FLAGS.k, FLAGS.exclude_seen)
    result.update(model="itemcf", dataset=dataset.name, neighbors=FLAGS.neighbors,
                  seconds=round(time.perf_counter() - start, 3))
    app.report(result, FLAGS.output)


if __name__ == "__main__":
    app.run(main)
