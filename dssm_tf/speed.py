"""Deprecated (goes in the next release): `python -m dssm_tf.speed` runs
`python -m benchmarks.speed` of the source tree, after a warning (see `dssm_tf.cli.moved`).
"""

from dssm_tf.cli.moved import run_moved

if __name__ == "__main__":
    run_moved("dssm_tf.speed", "speed")
