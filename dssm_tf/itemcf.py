"""`python -m dssm_tf.itemcf`: the command lives in `dssm_tf.cli.itemcf`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.itemcf import main

if __name__ == "__main__":
    run(main)
