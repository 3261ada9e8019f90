"""dssm_tf: two-tower (DSSM) deep candidate retrieval in TensorFlow/Keras.

dssm_tf is written against the Keras 2 API (``tf_keras``), which its exports also need to
load. TensorFlow reads ``TF_USE_LEGACY_KERAS`` once, at its first import, so it is set here,
before any module of this package can import TensorFlow.
"""

import logging
import os

os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # C++ errors too: ours are exceptions

# TensorFlow logs its INFO chatter (SavedModel assets, tracing) through Python logging.
logging.getLogger("tensorflow").setLevel(logging.WARNING)
# faiss logs which CPU build it loads at INFO; once absl's app.run has set up logging, a lazy
# `import faiss` would print those lines (one is a multi-line exception) on stderr.
logging.getLogger("faiss").setLevel(logging.WARNING)

__version__ = "0.2.0"
