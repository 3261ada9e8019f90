"""Deprecated (goes in the next release): moved to `benchmarks/scaling.py` of the source tree.

`import dssm_tf.cli.scaling` gives `benchmarks.scaling`, with a DeprecationWarning (see
`dssm_tf.cli.moved`).
"""

from dssm_tf.cli.moved import alias

alias(__name__, "scaling")
