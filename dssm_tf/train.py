"""`python -m dssm_tf.train`: the command lives in `dssm_tf.cli.train`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.train import main

if __name__ == "__main__":
    run(main)
