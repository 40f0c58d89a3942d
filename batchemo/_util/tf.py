"""Import TensorFlow/Keras without the start-up chatter a cron job must not print."""

import os
import sys

from batchemo._util.quiet import fd2_silenced


def import_tf():
    """Return the `tensorflow` module, imported quietly (idempotent)."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    # TF 2.21 writes oneDNN/cuInit/cpu-feature lines straight to fd 2 from C++ before absl logging
    # is initialised, so TF_CPP_MIN_LOG_LEVEL alone does not hide them: mute the descriptor itself.
    with fd2_silenced():
        import tensorflow as tf

        tf.get_logger().setLevel("ERROR")
        # The first op also triggers lazy CPU-feature logging; run one while still muted.
        tf.constant(0)
    return tf


def import_keras():
    """Return `keras`, with TensorFlow imported quietly first when it is the backend."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") == "tensorflow":
        import_tf()
    import keras

    return keras
