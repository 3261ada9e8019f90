"""`python -m dssm_tf.speed`: the command lives in `dssm_tf.cli.speed`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.speed import main

if __name__ == "__main__":
    run(main)
