"""`python -m dssm_tf.synthetic`: the command lives in `dssm_tf.cli.synthetic`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.synthetic import main

if __name__ == "__main__":
    run(main)
