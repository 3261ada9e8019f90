"""`python -m dssm_tf.scaling`: the command lives in `dssm_tf.cli.scaling`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.scaling import main

if __name__ == "__main__":
    run(main)
