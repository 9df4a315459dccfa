import numpy as np

from ml_backend.core.queue_score import LEAST_URGENT_SCORE, acquisition_to_score


def test_highest_acquisition_gets_lowest_score():
    values = np.array([0.1, 0.9, 0.5, 0.3])
    scores = acquisition_to_score(values, values)
    np.testing.assert_allclose(scores, [0.75, 0.0, 0.25, 0.5])
    # ascending score (Label Studio's serving order) == descending acquisition
    assert list(np.argsort(scores, kind="stable")) == list(np.argsort(-values, kind="stable"))


def test_ties_share_a_score_and_scores_stay_below_least_urgent():
    values = np.array([0.2, 0.2, 0.7])
    scores = acquisition_to_score(values, values)
    np.testing.assert_allclose(scores, [1 / 3, 1 / 3, 0.0])
    assert scores.max() < LEAST_URGENT_SCORE


def test_against_a_larger_reference_pool():
    pool = np.linspace(0, 1, 101)
    np.testing.assert_allclose(acquisition_to_score([1.0, 0.5, 0.0], pool), [0.0, 50 / 101, 100 / 101])


def test_empty_inputs():
    assert acquisition_to_score([], [1.0]).shape == (0,)
    np.testing.assert_array_equal(acquisition_to_score([0.3], []), [0.0])
