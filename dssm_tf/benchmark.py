"""`python -m dssm_tf.benchmark`: the command lives in `dssm_tf.cli.benchmark`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.benchmark import main

if __name__ == "__main__":
    run(main)
