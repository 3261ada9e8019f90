"""`python -m dssm_tf.recommend`: the command lives in `dssm_tf.cli.recommend`."""

from dssm_tf.cli.app import run
from dssm_tf.cli.recommend import main

if __name__ == "__main__":
    run(main)
