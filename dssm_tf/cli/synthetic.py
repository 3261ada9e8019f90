"""Write a synthetic data set in the MovieLens-25M layout (ratings.csv, movies.csv, README.txt).

    python -m dssm_tf.synthetic --out=DIR [--preset=movielens-25m|movielens-1m-size]
                                [--users=N] [--items=N] [--interactions=N] [--clusters=K]
                                [--seed=0] [--verbose=false]

`--preset` gives a real release's shape; `--users`, `--items` and `--interactions` (all three
without a preset) set or override the sizes. Read the result with
``--dataset=movielens-25m --data_dir=DIR``. The data, its planted structure (clusters, forward
walks, Zipf-like popularity) and its guarantees are described in `dssm_tf.data.synthetic`;
the same flags and `--seed` write the same bytes. `DIR` must be new, empty, or a data set this
command wrote (replaced); it is written under a temporary name beside it and renamed when
complete. Prints one line saying what was written.
"""

from __future__ import annotations

import dataclasses

from dssm_tf.cli import app
from dssm_tf.cli import flags as cli
from dssm_tf.data import synthetic
from dssm_tf.errors import ConfigError

FLAGS = cli.FLAGS
# Every flag this command reads is defined in dssm_tf.cli.flags: --preset and --clusters, and
# the shared --out, --seed, --verbose, --users, --items and --interactions (which `tabular` reads
# as file names and this command as counts).
SIZES = ("users", "items", "interactions")


def _count(name: str) -> int | None:
    """--users/--items/--interactions as a positive integer (None when not given)."""
    if not FLAGS[name].present:
        return None
    text = str(FLAGS[name].value).replace("_", "").replace(",", "").strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(name, f"expected a positive integer (synthetic: the number of "
                                f"{name}), got {FLAGS[name].value!r}")
    return int(text)


def spec_from_flags() -> tuple[synthetic.Spec, str]:
    """The Spec the flags describe, and the command line that writes it again."""
    if not FLAGS["out"].present:
        raise ConfigError("out", "required: the folder to write the data set into")
    sizes = {name: _count(name) for name in SIZES}
    given = {name: value for name, value in sizes.items() if value is not None}
    if FLAGS.preset:
        spec = dataclasses.replace(synthetic.PRESETS[FLAGS.preset], **given)
    elif len(given) == len(SIZES):
        spec = synthetic.Spec(**given)
    else:
        missing = next(name for name in SIZES if name not in given)
        raise ConfigError(missing if given else "preset",
                          f"give --preset ({', '.join(synthetic.PRESETS)}) or all of "
                          f"--users, --items and --interactions")
    spec = dataclasses.replace(spec, seed=FLAGS.seed, clusters=FLAGS.clusters)
    parts = ["python -m dssm_tf.synthetic", f"--out={FLAGS.out}"]
    if FLAGS.preset:
        parts.append(f"--preset={FLAGS.preset}")
    parts += [f"--{name}={value}" for name, value in given.items()]
    if FLAGS.clusters is not None:
        parts.append(f"--clusters={FLAGS.clusters}")
    parts.append(f"--seed={FLAGS.seed}")
    return spec, " ".join(parts)


def main(argv: list[str]) -> None:
    del argv
    spec, command = spec_from_flags()
    spec.validate()
    summary = synthetic.write_dataset(FLAGS.out, spec, command=command)
    print(f"wrote {summary.folder}: {summary.users:,} users, {summary.items:,} movies "
          f"({summary.rated_items:,} rated), {summary.interactions:,} ratings, "
          f"{summary.clusters} clusters, seed {spec.seed} ({summary.seconds:.1f} s); read it "
          f"with --dataset=movielens-25m --data_dir={summary.folder}")


if __name__ == "__main__":
    app.run(main)
