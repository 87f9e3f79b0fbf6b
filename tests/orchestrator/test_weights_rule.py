"""When the original trained in a run counts as done (orchestrator.stages.weights.settled): pure, no Ray."""
from orchestrator.stages.weights import STABLE_GAIN, settled


def test_a_top1_below_the_target_is_not_done_however_flat():
    assert not settled([0.70, 0.71, 0.71], target=0.9)


def test_a_top1_still_rising_is_not_done_even_above_the_target():
    assert not settled([0.80, 0.91, 0.91 + STABLE_GAIN], target=0.9)


def test_a_flat_top1_at_the_target_is_done():
    assert settled([0.6, 0.90, 0.905], target=0.9)
    assert settled([0.95], target=0.9)  # one epoch: nothing says it still rises


def test_without_a_target_only_stability_counts():
    assert settled([0.3, 0.4, 0.41], target=None)
    assert not settled([0.3, 0.4, 0.45], target=None)


def test_an_unknown_top1_is_not_done():
    assert not settled([], target=None) and not settled([0.9, None], target=0.5)
