"""RunningNormalizer: exact running statistics, baselines' normalisation formula, identity before data, state round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th

from sb3_hher.common.normalizer import GoalObsNormalizer, RunningNormalizer


@pytest.mark.parametrize("batch_sizes", [[1], [7, 1, 30], [100, 3, 3, 250, 1]])
def test_statistics_equal_numpy(batch_sizes):
    rng = np.random.default_rng(0)
    normalizer = RunningNormalizer(5)
    batches = [
        rng.normal(loc=[0.0, 3.0, -2.0, 100.0, 0.0], scale=[1.0, 0.1, 5.0, 20.0, 1e-3], size=(n, 5)) for n in batch_sizes
    ]
    for batch in batches:
        normalizer.update(batch)
    data = np.concatenate(batches)
    assert normalizer.count.item() == len(data)
    np.testing.assert_allclose(normalizer.mean.numpy(), data.mean(axis=0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(normalizer.var.numpy(), data.var(axis=0), rtol=1e-8, atol=1e-12)


def test_statistics_of_clipped_data():
    """Raw values beyond clip_obs are clipped before they enter the statistics (baselines clip_obs)."""
    rng = np.random.default_rng(1)
    normalizer = RunningNormalizer(3, clip_obs=2.0)
    batches = [rng.normal(scale=3.0, size=(n, 3)) for n in (10, 40, 5)]
    for batch in batches:
        normalizer.update(batch)
    data = np.clip(np.concatenate(batches), -2.0, 2.0)
    assert np.abs(np.concatenate(batches)).max() > 2.0
    np.testing.assert_allclose(normalizer.mean.numpy(), data.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(normalizer.var.numpy(), data.var(axis=0), rtol=1e-8)


def test_update_accepts_tensors_vectors_and_empty_batches():
    normalizer = RunningNormalizer(2)
    normalizer.update(th.tensor([[1.0, 2.0], [3.0, 4.0]]))
    normalizer.update(np.array([5.0, 6.0]))
    normalizer.update(np.zeros((0, 2)))
    assert normalizer.count.item() == 3
    np.testing.assert_allclose(normalizer.mean.numpy(), [3.0, 4.0])
    np.testing.assert_allclose(normalizer.var.numpy(), [8.0 / 3.0, 8.0 / 3.0])


def test_update_rejects_non_finite_values():
    normalizer = RunningNormalizer(2)
    with pytest.raises(ValueError, match="NaN or inf"):
        normalizer.update(np.array([[0.0, np.nan]]))
    assert normalizer.count.item() == 0


def test_identity_before_any_update():
    normalizer = RunningNormalizer(4)
    values = th.tensor([[-3.0, -0.5, 0.0, 4.9]])
    th.testing.assert_close(normalizer(values), values)
    np.testing.assert_array_equal(normalizer.mean.numpy(), np.zeros(4))
    np.testing.assert_array_equal(normalizer.std.numpy(), np.ones(4))
    # Only the normalised clip (norm_clip = 5) applies.
    th.testing.assert_close(normalizer(th.tensor([[-9.0, 6.0, 5.0, -5.0]])), th.tensor([[-5.0, 5.0, 5.0, -5.0]]))


def test_normalize_formula_and_clipping():
    rng = np.random.default_rng(2)
    eps, clip_range, clip_obs = 0.01, 3.0, 10.0
    normalizer = RunningNormalizer(3, eps=eps, clip_range=clip_range, clip_obs=clip_obs)
    # Third dimension constant: its std falls back to eps (baselines norm_eps).
    data = np.column_stack([rng.normal(2.0, 4.0, 500), rng.normal(-1.0, 0.5, 500), np.full(500, 0.3)])
    normalizer.update(data)
    clipped = np.clip(data, -clip_obs, clip_obs)
    assert (clipped != data).any()
    mean, var = clipped.mean(axis=0), clipped.var(axis=0)
    std = np.sqrt(np.maximum(var, eps**2))
    assert std[2] == pytest.approx(eps)

    values = np.array([[1.0, -1.2, 0.305], [50.0, -30.0, 0.2], [-8.0, 0.0, 0.3]])
    expected = np.clip((np.clip(values, -clip_obs, clip_obs) - mean) / std, -clip_range, clip_range)
    # forward uses float32 copies of the statistics: float32 accuracy whatever the input dtype.
    result = normalizer(th.as_tensor(values, dtype=th.float64)).numpy()
    np.testing.assert_allclose(result, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(result).max() == clip_range
    # float32 inputs stay float32; any leading dimensions are accepted.
    result32 = normalizer(th.as_tensor(values, dtype=th.float32).reshape(1, 3, 3))
    assert result32.dtype == th.float32 and result32.shape == (1, 3, 3)
    np.testing.assert_allclose(result32.numpy()[0], expected, rtol=1e-5, atol=1e-5)


def test_state_dict_round_trip():
    rng = np.random.default_rng(3)
    source = GoalObsNormalizer(4, 2, eps=0.02, clip_range=4.0, clip_obs=50.0)
    source.update(rng.normal(size=(30, 4)), rng.normal(size=(30, 2)))
    target = GoalObsNormalizer(4, 2, eps=0.02, clip_range=4.0, clip_obs=50.0)
    target.load_state_dict(source.state_dict())
    for name, buffer in source.state_dict().items():
        assert th.equal(buffer, target.state_dict()[name]), name
    assert target.obs.count.item() == 30 and target.goal.count.item() == 30
    values = th.as_tensor(rng.normal(size=(5, 4)), dtype=th.float32)
    th.testing.assert_close(target.obs(values), source.obs(values), rtol=0, atol=0)
    # Updates continue from the loaded statistics.
    extra = rng.normal(size=(10, 4))
    source.obs.update(extra)
    target.obs.update(extra)
    th.testing.assert_close(target.obs.mean, source.obs.mean, rtol=0, atol=0)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="positive size"):
        RunningNormalizer(0)
    with pytest.raises(ValueError, match="must be positive"):
        RunningNormalizer(3, eps=0.0)
