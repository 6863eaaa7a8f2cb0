import numpy as np

from napari_medai.api import _argmax_small


def test_matches_numpy_argmax_including_ties_and_dtype():
    probs = np.random.default_rng(0).random((4, 5, 6, 7)).astype(np.float32)
    probs[1, 0, 0, 0] = probs[2, 0, 0, 0] = 2.0  # tie: the first class wins, as in numpy
    labels = _argmax_small(probs)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, probs.argmax(0))
    assert labels[0, 0, 0] == 1
