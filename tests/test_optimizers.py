"""LazyAdam: Adam on the rows a sparse gradient touches, nothing on the others."""

import doctest

import numpy as np
import pytest

tf = pytest.importorskip("tensorflow")
keras = pytest.importorskip("tf_keras")

from dssm_tf.training import optimizers  # noqa: E402


def test_docstring_example():
    assert doctest.testmod(optimizers, raise_on_error=False).failed == 0


def _sparse(values, rows, shape):
    return tf.IndexedSlices(tf.constant(values, tf.float32), tf.constant(rows),
                            tf.constant(shape))


def test_equals_adam_when_every_row_is_touched():
    rng = np.random.default_rng(0)
    start = rng.normal(size=(5, 3)).astype(np.float32)
    lazy, dense = tf.Variable(start), tf.Variable(start)
    lazy_opt, dense_opt = optimizers.LazyAdam(0.01), keras.optimizers.Adam(0.01)
    for _ in range(4):
        grad = rng.normal(size=(5, 3)).astype(np.float32)
        # Rows listed out of order and one of them twice (its two parts sum to its gradient).
        rows = [4, 0, 2, 1, 3, 2]
        values = np.concatenate([grad[[4, 0]], 0.5 * grad[[2]], grad[[1, 3]], 0.5 * grad[[2]]])
        lazy_opt.apply_gradients([(_sparse(values, rows, [5, 3]), lazy)])
        dense_opt.apply_gradients([(tf.constant(grad), dense)])
    np.testing.assert_allclose(lazy.numpy(), dense.numpy(), rtol=1e-5, atol=1e-6)


def test_untouched_rows_keep_weights_and_moments():
    table = tf.Variable(tf.ones([4, 2]))
    opt = optimizers.LazyAdam(0.1)
    opt.apply_gradients([(_sparse([[1.0, 1.0]], [0], [4, 2]), table)])
    opt.apply_gradients([(_sparse([[1.0, 1.0]], [2], [4, 2]), table)])
    m = opt._momentums[0].numpy()
    np.testing.assert_allclose(m[0], 0.1, rtol=1e-6)  # set at step 1, not decayed at step 2
    np.testing.assert_allclose(m[[1, 3]], 0.0)
    np.testing.assert_allclose(table.numpy()[[1, 3]], 1.0)
    # Dense variables take Keras' Adam update unchanged.
    w, w_ref = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    optimizers.LazyAdam(0.1).apply_gradients([(tf.constant([0.5, -1.0]), w)])
    keras.optimizers.Adam(0.1).apply_gradients([(tf.constant([0.5, -1.0]), w_ref)])
    np.testing.assert_allclose(w.numpy(), w_ref.numpy())
