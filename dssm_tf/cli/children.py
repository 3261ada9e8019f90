"""Deprecated (goes in the next release): moved to `benchmarks/children.py` of the source tree.

`import dssm_tf.cli.children` gives `benchmarks.children`, with a DeprecationWarning (see
`dssm_tf.cli.moved`).
"""

from dssm_tf.cli.moved import alias

alias(__name__, "children")
