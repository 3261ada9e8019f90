"""Starting TensorFlow without burying the command's own output.

TensorFlow's C++ side writes straight to file descriptor 2 while it loads and while it first
looks for devices: ``WARNING: All log messages before absl::InitializeLog() ...``, a oneDNN
notice, and on a machine without a GPU ``failed call to cuInit`` — seven lines on every run,
before any line of ours, that ``TF_CPP_MIN_LOG_LEVEL`` does not silence. `start_tensorflow`
imports TensorFlow and lists its devices with descriptor 2 pointed at a temporary file, so
those lines go nowhere unless asked for (`show_logs`, the commands' ``--verbosity``). If
TensorFlow fails to start, its last complaint is folded into the one error line.

Usage::

    runtime.start_tensorflow(show_logs=False)   # once, before any module that imports TF
    from dssm_tf.training import trainer
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

from dssm_tf.errors import InputError

_started = False


@contextlib.contextmanager
def _descriptor_2_captured():
    """Point file descriptor 2 at a temporary file; yield a function reading what it got."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lambda: (sink.seek(0), sink.read())[1].decode("utf-8", "replace")
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def start_tensorflow(show_logs: bool = False) -> None:
    """Import TensorFlow and tf_keras and initialise the devices, quietly (see above)."""
    global _started
    if _started:
        return
    context = contextlib.nullcontext(lambda: "") if show_logs else _descriptor_2_captured()
    with context as captured:
        try:
            import tensorflow as tf  # noqa: PLC0415
            import tf_keras  # noqa: F401, PLC0415

            tf.config.list_physical_devices()
        except Exception as error:  # noqa: BLE001  (any start-up failure is reported so)
            said = [line for line in captured().splitlines() if line.strip()]
            cause = said[-1].strip() if said else ""
            raise InputError(f"TensorFlow failed to start: {error}"
                             + (f" ({cause})" if cause else "")) from None
    _started = True
