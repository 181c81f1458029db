"""Every registered generator: shapes, argument errors, gradients and the declared receptive field."""

import pytest
import torch

from medgan.networks import build_network, network_names

CRITICS = {"patch-critic-3d"}

# Small configurations, one or more per generator; the first of each name is its main test case.
SMALL = {
    "identity": [{}],
    "red-cnn-3d": [{"channels": 4, "depth": 2}],
    "cpce-3d": [{"channels": 4, "depth": 3}, {"channels": 4, "depth": 1, "kernel_size": 5}],
    "unet-3d": [
        {"channels": 4, "levels": 2},
        {"channels": 4, "levels": 2, "upsampling": "trilinear"},
        {"channels": 8, "levels": 1, "normalization": "group", "norm_groups": 4, "residual": False},
        {"channels": 4, "levels": 3, "kernel_size": 1},
    ],
    "mdcsrn-3d": [
        {"channels": 8, "growth_rate": 4, "n_blocks": 2, "n_units": 2},
        {"channels": 8, "growth_rate": 4, "n_blocks": 2, "n_units": 2, "mode": "refine"},
        {"channels": 4, "growth_rate": 4, "n_blocks": 1, "n_units": 3, "upsampling": "transposed"},
    ],
}
CASES = [(name, kwargs) for name, configs in SMALL.items() for kwargs in configs]
CASE_IDS = [f"{name}-{index}" for name, configs in SMALL.items() for index in range(len(configs))]

SHAPES = [(1, 1, 1, 13, 11), (2, 1, 5, 9, 17), (1, 1, 7, 7, 7), (1, 1, 1, 1, 1), (1, 1, 2, 3, 1)]


def randomize(network: torch.nn.Module, seed: int = 0, positive: bool = False) -> None:
    """Overwrite every parameter with random values, so zero-initialised last layers pass gradients."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            values = torch.randn(parameter.shape, generator=generator, dtype=parameter.dtype) * 0.2
            parameter.copy_(values.abs() + 0.01 if positive else values)


def test_table_covers_every_generator():
    assert set(SMALL) == set(network_names()) - CRITICS


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_generator_keeps_grid(name, kwargs, shape):
    network = build_network(name, kwargs)
    randomize(network)
    x = torch.randn(shape)
    y = network(x)
    assert network.output_scale == (1, 1, 1)
    assert y.shape == x.shape
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_generator_declares_int_receptive_field(name, kwargs):
    network = build_network(name, kwargs)
    assert isinstance(network.receptive_field, int)
    assert network.receptive_field >= 1
    assert isinstance(network.output_scale, tuple)
    assert all(type(factor) is int for factor in network.output_scale)


@pytest.mark.parametrize("name", ["red-cnn-3d", "cpce-3d", "unet-3d", "mdcsrn-3d"])
def test_untrained_residual_generator_is_identity(name):
    network = build_network(name, SMALL[name][0])
    x = torch.randn(1, 1, 3, 10, 7)
    assert torch.equal(network(x), x)


def test_unet_without_residual_is_not_identity():
    network = build_network("unet-3d", {"channels": 4, "levels": 1, "residual": False, "out_channels": 2})
    y = network(torch.randn(1, 1, 3, 5, 4))
    assert y.shape == (1, 2, 3, 5, 4)


@pytest.mark.parametrize("name, kwargs", CASES, ids=CASE_IDS)
def test_gradients_reach_every_parameter(name, kwargs):
    network = build_network(name, kwargs)
    randomize(network, seed=1)
    x = torch.randn(2, 1, 3, 6, 5, requires_grad=True)
    loss = network(x).square().mean()
    loss.backward()
    assert torch.isfinite(x.grad).all()
    assert x.grad.abs().sum() > 0
    for parameter_name, parameter in network.named_parameters():
        assert parameter.grad is not None, parameter_name
        assert torch.isfinite(parameter.grad).all(), parameter_name
        assert parameter.grad.abs().sum() > 0, parameter_name


@pytest.mark.parametrize("name", ["red-cnn-3d", "cpce-3d", "unet-3d", "mdcsrn-3d"])
def test_untrained_generator_gradients_are_finite(name):
    network = build_network(name, SMALL[name][0])
    x = torch.randn(1, 1, 4, 5, 6, requires_grad=True)
    network(x).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in network.parameters() if p.grad is not None)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())


def measured_receptive_field(network: torch.nn.Module, axis: int, length: int, positions: list[int]) -> int:
    """Return the widest span of input voxels along ``axis`` with a non-zero gradient for one output voxel.

    Batch element ``b`` measures output position ``positions[b]``, so one backward pass measures them all.
    """
    shape = [len(positions), 1, 1, 1, 1]
    shape[axis] = length
    x = torch.rand(shape) + 0.5
    x.requires_grad_(True)
    y = network(x)
    picked = []
    for sample, position in enumerate(positions):
        index = [sample, 0, 0, 0, 0]
        index[axis] = position
        picked.append(y[tuple(index)])
    torch.stack(picked).sum().backward()
    widest = 0
    for sample in range(len(positions)):
        nonzero = x.grad[sample].flatten().nonzero().flatten()
        assert nonzero.min() > 0, "the span reaches the first voxel; use a longer input"
        assert nonzero.max() < length - 1, "the span reaches the last voxel; use a longer input"
        widest = max(widest, int(nonzero.max() - nonzero.min()) + 1)
    return widest


@pytest.mark.parametrize(
    "name, kwargs",
    [case for case in CASES if case[1].get("normalization") != "group"],
)
def test_receptive_field_matches_gradient_span(name, kwargs):
    network = build_network(name, kwargs)
    # Positive weights and inputs keep every ReLU active and rule out cancellations, so the measured
    # span is the full dependency span.
    randomize(network, seed=2, positive=True)
    declared = network.receptive_field
    length = declared + 32
    widest = 0
    # Same-grid networks are isotropic, so one axis per distinct scale factor covers every case.
    axes = {factor: axis for axis, factor in zip((2, 3, 4), network.output_scale)}
    for factor, axis in axes.items():
        # The span depends on the output position modulo the total stride, so cover one full period.
        period = max(4, factor, 2 ** kwargs.get("levels", 0))
        start = (length // 2 - 2) * factor
        positions = list(range(start, start + period))
        widest = max(widest, measured_receptive_field(network, axis, length, positions))
    assert widest == declared


@pytest.mark.parametrize(
    "kwargs",
    [
        {"scale": [3, 1, 2]},
        {"scale": [2, 1, 1], "interpolation": "nearest"},
        {"scale": [1, 4, 1], "upsampling": "transposed"},
    ],
)
def test_upsampling_receptive_field_matches_gradient_span(kwargs):
    network = build_network("mdcsrn-3d", {"channels": 4, "growth_rate": 4, "n_blocks": 1, "n_units": 2, **kwargs})
    randomize(network, seed=6, positive=True)
    declared = network.receptive_field
    length = declared + 32
    widest = 0
    for axis, factor in zip((2, 3, 4), network.output_scale):
        start = (length // 2 - 2) * factor
        positions = list(range(start, start + max(4, factor)))
        widest = max(widest, measured_receptive_field(network, axis, length, positions))
    assert widest == declared


@pytest.mark.parametrize("size", [1, 3, 4, 5, 8, 9])
def test_unet_pads_and_crops_any_size(size):
    network = build_network("unet-3d", {"channels": 4, "levels": 3, "residual": False})
    randomize(network, seed=3)
    x = torch.randn(1, 1, size, size + 1, 2 * size + 3)
    assert network(x).shape == x.shape


def test_unet_crop_matches_padding_offset():
    # 58 voxels are padded by one on each side, so x[5] lands where x[4] lands in the unpadded 64-voxel
    # run: a shift by the total stride 2 ** levels. The crop must then shift the interior output by 5.
    network = build_network("unet-3d", {"channels": 4, "levels": 2, "residual": False}).double()
    randomize(network, seed=4)
    assert network.receptive_field // 2 < 24
    x = torch.randn(1, 1, 1, 1, 64, dtype=torch.float64)
    y = network(x)
    y_part = network(x[..., 5:63])
    assert torch.allclose(y[..., 5 + 24:63 - 24], y_part[..., 24:-24], atol=1e-10)


def test_cpce_single_slice_equals_replicated_volume():
    # Replicated edge padding makes one slice behave like a stack of identical slices.
    network = build_network("cpce-3d", {"channels": 4, "depth": 2})
    randomize(network, seed=5)
    one_slice = torch.randn(1, 1, 1, 9, 8)
    stacked = one_slice.expand(1, 1, 7, 9, 8).contiguous()
    single = network(one_slice)
    replicated = network(stacked)
    assert torch.allclose(replicated, single.expand_as(replicated), atol=1e-5)


def test_red_cnn_parameter_names_unchanged():
    names = set(build_network("red-cnn-3d", {"channels": 4, "depth": 2}).state_dict())
    assert names == {"encoder.0.weight", "encoder.0.bias", "encoder.1.weight", "encoder.1.bias",
                     "decoder.0.weight", "decoder.0.bias", "decoder.1.weight", "decoder.1.bias"}


@pytest.mark.parametrize(
    "name, kwargs, word",
    [
        ("cpce-3d", {"channels": 0}, "channels"),
        ("cpce-3d", {"depth": -1}, "depth"),
        ("cpce-3d", {"depth": 2.0}, "depth"),
        ("cpce-3d", {"kernel_size": 2}, "kernel_size"),
        ("cpce-3d", {"out_channels": 3}, "out_channels"),
        ("cpce-3d", {"in_channels": True}, "in_channels"),
        ("unet-3d", {"levels": 0}, "levels"),
        ("unet-3d", {"upsampling": "nearest"}, "upsampling"),
        ("unet-3d", {"normalization": "batch"}, "normalization"),
        ("unet-3d", {"normalization": "group", "channels": 6, "norm_groups": 4}, "norm_groups"),
        ("unet-3d", {"norm_groups": 0}, "norm_groups"),
        ("unet-3d", {"residual": "yes"}, "residual"),
        ("unet-3d", {"out_channels": 2}, "out_channels"),
        ("unet-3d", {"kernel_size": 4}, "kernel_size"),
        ("mdcsrn-3d", {"growth_rate": 0}, "growth_rate"),
        ("mdcsrn-3d", {"n_blocks": 0}, "n_blocks"),
        ("mdcsrn-3d", {"n_units": "4"}, "n_units"),
        ("mdcsrn-3d", {"mode": "sr"}, "mode"),
        ("mdcsrn-3d", {"upsampling": "nearest"}, "upsampling"),
        ("mdcsrn-3d", {"interpolation": "cubic"}, "interpolation"),
        ("mdcsrn-3d", {"out_channels": 2}, "out_channels"),
        ("mdcsrn-3d", {"kernel_size": 0}, "kernel_size"),
        ("identity", {"in_channels": 0}, "in_channels"),
        ("unet-3d", {"level": 2}, "level"),
    ],
)
def test_invalid_generator_argument_is_named(name, kwargs, word):
    with pytest.raises(ValueError, match=word):
        build_network(name, kwargs)


@pytest.mark.parametrize("name", ["cpce-3d", "unet-3d", "mdcsrn-3d"])
def test_generator_rejects_wrong_input(name):
    network = build_network(name, SMALL[name][0])
    with pytest.raises(ValueError, match="B, C, D, H, W"):
        network(torch.randn(1, 6, 6, 6))
    with pytest.raises(ValueError, match="in_channels"):
        network(torch.randn(1, 2, 4, 4, 4))
    with pytest.raises(ValueError, match="at least one"):
        network(torch.randn(1, 1, 0, 4, 4))
