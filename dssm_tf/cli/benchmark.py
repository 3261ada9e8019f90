"""Deprecated (goes in the next release): moved to `benchmarks/benchmark.py` of the source tree.

`import dssm_tf.cli.benchmark` gives `benchmarks.benchmark`, with a DeprecationWarning (see
`dssm_tf.cli.moved`).
"""

from dssm_tf.cli.moved import alias

alias(__name__, "benchmark")
