"""Deprecated (goes in the next release): moved to `benchmarks/speed.py` of the source tree.

`import dssm_tf.cli.speed` gives `benchmarks.speed`, with a DeprecationWarning (see
`dssm_tf.cli.moved`).
"""

from dssm_tf.cli.moved import alias

alias(__name__, "speed")
