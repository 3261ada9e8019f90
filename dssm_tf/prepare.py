"""`python -m dssm_tf.prepare`: the command lives in `dssm_tf.cli.prepare`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.prepare import main

if __name__ == "__main__":
    run(main)
