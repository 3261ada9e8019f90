"""`python -m dssm_tf.evaluate`: the command lives in `dssm_tf.cli.evaluate`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.evaluate import main

if __name__ == "__main__":
    run(main)
