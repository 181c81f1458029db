"""mdcsrn-3d and the 3D pixel shuffle: upsampling shapes, grid convention, refine mode and scale errors."""

import pytest
import torch
import torch.nn.functional as F

from medgan.networks import build_network, pixel_shuffle_3d

SMALL = {"channels": 8, "growth_rate": 4, "n_blocks": 2, "n_units": 2}


def naive_pixel_shuffle_3d(x: torch.Tensor, scale: tuple[int, int, int]) -> torch.Tensor:
    """Fill every output voxel from its input channel and voxel, one at a time."""
    sd, sh, sw = scale
    batch, channels, depth, height, width = x.shape
    block = sd * sh * sw
    out = torch.empty(batch, channels // block, depth * sd, height * sh, width * sw, dtype=x.dtype)
    for b in range(batch):
        for c in range(channels // block):
            for d in range(depth * sd):
                for h in range(height * sh):
                    for w in range(width * sw):
                        sub_voxel = ((d % sd) * sh + h % sh) * sw + w % sw
                        out[b, c, d, h, w] = x[b, c * block + sub_voxel, d // sd, h // sh, w // sw]
    return out


def randomize(network: torch.nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.2)


@pytest.mark.parametrize("scale", [(2, 3, 1), (1, 1, 1), (4, 1, 1), (1, 2, 2), (3, 2, 5)])
def test_pixel_shuffle_equals_naive_loop(scale):
    block = scale[0] * scale[1] * scale[2]
    x = torch.randn(2, 2 * block, 2, 3, 2)
    assert torch.equal(pixel_shuffle_3d(x, scale), naive_pixel_shuffle_3d(x, scale))


def test_pixel_shuffle_matches_torch_2d_per_slice():
    x = torch.randn(2, 3 * 9, 4, 5, 6)
    shuffled = pixel_shuffle_3d(x, (1, 3, 3))
    for d in range(4):
        assert torch.equal(shuffled[:, :, d], F.pixel_shuffle(x[:, :, d], 3))


def test_pixel_shuffle_rejects_bad_channels():
    with pytest.raises(ValueError, match="multiple of sd \\* sh \\* sw = 4"):
        pixel_shuffle_3d(torch.randn(1, 6, 2, 2, 2), (2, 2, 1))
    with pytest.raises(ValueError, match="three factors"):
        pixel_shuffle_3d(torch.randn(1, 4, 2, 2, 2), (2, 2))
    with pytest.raises(ValueError, match="scale factor"):
        pixel_shuffle_3d(torch.randn(1, 4, 2, 2, 2), (0, 2, 2))


@pytest.mark.parametrize("scale", [[4, 1, 1], [2, 2, 2], [1, 1, 3], [5, 1, 1]])
@pytest.mark.parametrize("shape", [(1, 1, 3, 5, 4), (2, 1, 1, 1, 2)])
@pytest.mark.parametrize("upsampling", ["pixel-shuffle", "transposed"])
def test_mdcsrn_output_shape(scale, shape, upsampling):
    network = build_network("mdcsrn-3d", {**SMALL, "scale": scale, "upsampling": upsampling})
    randomize(network, seed=0)
    y = network(torch.randn(shape))
    expected = (shape[0], 1, shape[2] * scale[0], shape[3] * scale[1], shape[4] * scale[2])
    assert network.output_scale == tuple(scale)
    assert y.shape == expected
    assert torch.isfinite(y).all()


def test_mdcsrn_task_default_arguments_build():
    network = build_network("mdcsrn-3d", {"scale": [4, 1, 1]})
    assert network.output_scale == (4, 1, 1)


def test_untrained_mdcsrn_returns_trilinear_interpolation():
    network = build_network("mdcsrn-3d", {**SMALL, "scale": [4, 1, 2]})
    x = torch.randn(2, 1, 3, 4, 5)
    expected = F.interpolate(x, size=(12, 4, 10), mode="trilinear", align_corners=False)
    assert torch.equal(network(x), expected)


def test_untrained_mdcsrn_nearest_repeats_voxels():
    network = build_network("mdcsrn-3d", {**SMALL, "scale": [3, 1, 2], "interpolation": "nearest"})
    x = torch.randn(1, 1, 2, 3, 4)
    expected = x.repeat_interleave(3, dim=2).repeat_interleave(2, dim=4)
    assert torch.equal(network(x), expected)


def test_sub_voxel_centres_follow_documented_convention():
    # A ramp x[d] = d sampled at output voxel j gives its centre, (j + 0.5) / s - 0.5, away from the edges.
    network = build_network("mdcsrn-3d", {**SMALL, "scale": [4, 1, 1]})
    ramp = torch.arange(6, dtype=torch.float32).reshape(1, 1, 6, 1, 1)
    centres = network(ramp).flatten()
    j = torch.arange(24, dtype=torch.float32)
    expected = (j + 0.5) / 4 - 0.5
    inside = slice(2, 22)
    assert torch.allclose(centres[inside], expected[inside], atol=1e-6)


def test_icnr_upsampler_starts_without_checkerboard():
    network = build_network("mdcsrn-3d", {**SMALL, "scale": [2, 1, 3]})
    features = torch.randn(1, SMALL["channels"], 3, 4, 2)
    fine = pixel_shuffle_3d(network.upsampler(features), (2, 1, 3))
    assert torch.equal(fine[:, :, 1::2], fine[:, :, 0::2])
    for offset in range(1, 3):
        assert torch.equal(fine[..., offset::3], fine[..., 0::3])


def test_refine_mode_keeps_shape_and_adds_residual():
    network = build_network("mdcsrn-3d", {**SMALL, "mode": "refine"})
    x = torch.randn(1, 1, 8, 5, 7)
    assert network.output_scale == (1, 1, 1)
    assert torch.equal(network(x), x)
    randomize(network, seed=1)
    y = network(x)
    assert y.shape == x.shape
    assert not torch.allclose(y, x)


def test_refine_mode_rejects_upsampling_scale():
    with pytest.raises(ValueError, match="scale must be \\[1, 1, 1\\] in refine mode.*\\[4, 1, 1\\]"):
        build_network("mdcsrn-3d", {"mode": "refine", "scale": [4, 1, 1]})


@pytest.mark.parametrize("scale", [[0, 1, 1], [6, 1, 1], [1, 1, -2], [4, 1], [4, 1, 1, 1], 4, "411", [1.5, 1, 1],
                                   [True, 1, 1], None])
def test_invalid_scale_is_named(scale):
    with pytest.raises(ValueError, match="scale"):
        build_network("mdcsrn-3d", {"scale": scale})


def test_mdcsrn_gradients_flow_through_upsampling():
    network = build_network("mdcsrn-3d", {**SMALL, "scale": [2, 1, 1]})
    randomize(network, seed=2)
    x = torch.randn(2, 1, 3, 4, 4, requires_grad=True)
    network(x).square().mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None, name
        assert torch.isfinite(parameter.grad).all(), name
        assert parameter.grad.abs().sum() > 0, name
