import numpy as np
import pytest

from medgan.evaluation.regions import find_uniform_region, find_uniform_regions


def test_finds_flat_box_among_texture():
    rng = np.random.default_rng(0)
    array = rng.normal(0, 50, (40, 36, 2))
    array[20:33, 5:18, :] = rng.normal(30, 2, (13, 13, 2))
    region = find_uniform_region(array, size=9)
    values = region.take(array)
    assert values.shape == (9, 9, 2)
    assert values.std() < 5


def test_ignores_air_and_bone():
    array = np.full((30, 30, 1), -1000.0)
    array[10:25, 10:25] = 40.0 + np.random.default_rng(1).normal(0, 10, (15, 15, 1))
    region = find_uniform_region(array, size=5)
    assert region.take(array).min() > -500


def test_no_soft_tissue_raises():
    with pytest.raises(ValueError, match="hu_range"):
        find_uniform_region(np.full((20, 20, 1), -1000.0), size=5)


def test_several_regions_do_not_overlap():
    rng = np.random.default_rng(2)
    array = rng.normal(0, 60, (40, 40, 2))
    array[2:15, 2:15, :] = rng.normal(30, 2, (13, 13, 2))
    array[22:35, 20:33, :] = rng.normal(50, 4, (13, 13, 2))
    regions = find_uniform_regions(array, count=2, size=9)
    assert len(regions) == 2
    first, second = regions
    assert first.take(array).std() < 5
    assert second.take(array).std() < 8
    assert first.i1 <= second.i0 or second.i1 <= first.i0 or first.j1 <= second.j0 or second.j1 <= first.j0


def test_several_regions_rejects_bad_count():
    with pytest.raises(ValueError, match="count"):
        find_uniform_regions(np.zeros((20, 20, 1)), count=0)
    with pytest.raises(ValueError, match="hu_range"):
        find_uniform_regions(np.full((20, 20, 1), -1000.0), size=5)
