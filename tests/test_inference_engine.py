"""The sliding-window engine: exactness, blending, output scale, precision, warnings and the compile fallback."""

import itertools
import logging

import pytest
import torch
import torch.nn.functional as F

from medgan.inference import performance
from medgan.inference.performance import CompiledNetwork
from medgan.inference.sliding_window import plan_tiling, sliding_window_inference, window_starts


def identity(x):
    return x


class BoxFilter(torch.nn.Module):
    """Fixed 3 x 3 x 3 mean with replicated edges: the reference for tiling against one whole-volume pass."""

    receptive_field = 3

    def forward(self, x):
        padded = F.pad(x, (1, 1, 1, 1, 1, 1), mode="replicate")
        return F.avg_pool3d(padded, kernel_size=3, stride=1)


class NearestRepeat(torch.nn.Module):
    """Repeat every voxel ``scale`` times along each tensor axis: super-resolution by nearest neighbour."""

    receptive_field = 1

    def __init__(self, scale=(4, 1, 1)):
        super().__init__()
        self.scale = scale

    def forward(self, x):
        for axis, factor in zip((2, 3, 4), self.scale):
            x = torch.repeat_interleave(x, factor, dim=axis)
        return x


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
@pytest.mark.parametrize(
    "shape, roi",
    [
        ((7, 13, 11), (3, 5, 4)),  # odd shapes, several windows on every axis
        ((5, 9, 6), (8, 4, 4)),  # window larger than the volume along D
        ((6, 7, 9), (1, 5, 5)),  # window of one slice
        ((1, 1, 1), (2, 2, 2)),  # a single voxel
    ],
)
def test_identity_is_bit_exact(shape, roi, blend):
    volume = torch.randn(1, 2, *shape, generator=torch.Generator().manual_seed(3)) * 1000
    output = sliding_window_inference(volume, identity, roi, overlap=0.4, batch_size=3, blend=blend)
    assert output.dtype == torch.float32
    assert output.device.type == "cpu"
    assert torch.equal(output, volume)


@pytest.mark.parametrize("blend", ["gaussian", "constant"])
def test_constant_input_stays_constant(blend):
    volume = torch.full((1, 1, 9, 10, 11), -731.25)
    output = sliding_window_inference(volume, BoxFilter(), (4, 6, 5), overlap=0.3, blend=blend)
    assert torch.allclose(output, volume, rtol=0, atol=1e-9 * 731.25)


def test_identity_exact_channels_last_batched():
    volume = torch.randn(1, 1, 5, 12, 10)
    output = sliding_window_inference(volume, identity, (3, 5, 5), overlap=0.5, batch_size=4, channels_last=True,
                                      full_batches=True)
    assert torch.equal(output, volume)


def covering_is_interior(tiling, index):
    """Return whether every window covering ``index`` contains its 3-voxel neighbourhood or ends at the border."""
    for start in tiling.starts:
        end = start + tiling.window
        if start <= index < end:
            if index - 1 < start and start != 0:
                return False
            if index + 1 >= end and end != tiling.size:
                return False
    return True


def test_box_filter_tiled_matches_whole_volume():
    volume = torch.randn(1, 1, 10, 17, 15, generator=torch.Generator().manual_seed(5))
    roi, overlap = (5, 7, 6), 0.5
    network = BoxFilter()
    whole = network(volume)
    tiled = sliding_window_inference(volume, network, roi, overlap=overlap)

    tilings = plan_tiling(volume.shape[2:], roi, overlap, (1, 1, 1))
    masks = [torch.tensor([covering_is_interior(t, i) for i in range(t.size)]) for t in tilings]
    interior = masks[0][:, None, None] & masks[1][None, :, None] & masks[2][None, None, :]
    assert interior.sum() > 0.1 * interior.numel()
    difference = (tiled - whole)[0, 0].abs()
    # Where every covering window contains the whole 3 x 3 x 3 neighbourhood, tiling changes nothing.
    assert difference[interior].max() < 1e-5
    # Elsewhere an edge-affected window gets the floor weight 1e-3, a few percent of the weight of a window
    # in which the voxel lies closer to the centre (sigma is an eighth of these short windows).
    assert difference.max() < 5e-2 * whole.abs().max()
    constant = sliding_window_inference(volume, network, roi, overlap=overlap, blend="constant")
    assert difference.mean() < 0.2 * (constant - whole).abs().mean()


def test_output_scale_repeats_and_places_windows():
    volume = torch.randn(1, 1, 5, 7, 6, generator=torch.Generator().manual_seed(2))
    scale = (4, 2, 1)
    output = sliding_window_inference(volume, NearestRepeat(scale), (2, 4, 3), overlap=0.5, output_scale=scale,
                                      batch_size=2)
    assert output.shape == (1, 1, 20, 14, 6)
    assert torch.equal(output, NearestRepeat(scale)(volume))


def test_output_scale_wrong_network_shape_is_rejected():
    volume = torch.zeros(1, 1, 4, 4, 4)
    with pytest.raises(ValueError, match=r"output_scale \(2, 1, 1\)"):
        sliding_window_inference(volume, identity, (2, 2, 2), output_scale=(2, 1, 1))


@pytest.mark.parametrize("scale", [(0, 1, 1), (1, 1), (1.5, 1, 1), (True, 1, 1)])
def test_output_scale_must_be_positive_integers(scale):
    with pytest.raises(ValueError, match="output_scale"):
        sliding_window_inference(torch.zeros(1, 1, 4, 4, 4), identity, (2, 2, 2), output_scale=scale)


def test_rejects_bad_precision_and_integer_volume():
    with pytest.raises(ValueError, match="precision"):
        sliding_window_inference(torch.zeros(1, 1, 4, 4, 4), identity, (2, 2, 2), precision="int8")
    with pytest.raises(ValueError, match="floating-point"):
        sliding_window_inference(torch.zeros(1, 1, 4, 4, 4, dtype=torch.int16), identity, (2, 2, 2))


def test_bf16_stays_close_to_fp32():
    torch.manual_seed(0)
    network = torch.nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate")
    volume = torch.randn(1, 1, 6, 12, 12)
    reference = sliding_window_inference(volume, network, (4, 8, 8))
    reduced = sliding_window_inference(volume, network, (4, 8, 8), precision="bf16")
    assert reduced.dtype == torch.float32
    assert not torch.equal(reduced, reference)
    # bf16 keeps 8 significant bits: a relative error below 2^-7 of the output's range.
    assert (reduced - reference).abs().max() < 2 ** -7 * reference.abs().max() * 2


def test_repeated_runs_are_identical():
    torch.manual_seed(1)
    network = torch.nn.Conv3d(1, 1, 3, padding=1, padding_mode="replicate")
    volume = torch.randn(1, 1, 7, 11, 9)
    first = sliding_window_inference(volume, network, (4, 5, 5), overlap=0.5, batch_size=2)
    second = sliding_window_inference(volume, network, (4, 5, 5), overlap=0.5, batch_size=2)
    assert torch.equal(first, second)


def test_window_starts_overlap_at_least_requested():
    for size, window, overlap in itertools.product((17, 40, 64), (5, 17, 64), (0.0, 0.25, 0.5)):
        starts = window_starts(size, window, overlap)
        gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
        assert all(window - gap >= overlap * window - 1e-9 for gap in gaps)
    assert window_starts(112, 64, 0.25) == [0, 48]


def test_small_overlap_warns_about_receptive_field(caplog):
    network = BoxFilter()
    network.receptive_field = 5
    volume = torch.zeros(1, 1, 4, 20, 20)
    with caplog.at_level(logging.WARNING, logger="medgan.inference.sliding_window"):
        sliding_window_inference(volume, network, (4, 10, 10), overlap=0.2)
    assert "overlap by 2 voxels along axis H" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="medgan.inference.sliding_window"):
        sliding_window_inference(volume, network, (4, 10, 10), overlap=0.4)
    assert caplog.text == ""


def test_shrunk_axis_is_logged(caplog):
    with caplog.at_level(logging.DEBUG, logger="medgan.inference.sliding_window"):
        sliding_window_inference(torch.zeros(1, 1, 3, 8, 8), identity, (16, 4, 4))
    assert "Axis D has 3 voxels" in caplog.text
    assert "Axis H" not in caplog.text


def test_compile_failure_falls_back_to_eager(monkeypatch, caplog):
    def broken_compile(network, **kwargs):
        def compiled(batch):
            raise RuntimeError("no C++ compiler")
        return compiled

    monkeypatch.setattr(torch, "compile", broken_compile)
    network = BoxFilter()
    wrapped = CompiledNetwork(network)
    volume = torch.randn(1, 1, 4, 6, 6)
    with caplog.at_level(logging.WARNING, logger="medgan.inference.performance"):
        output = sliding_window_inference(volume, wrapped, (4, 6, 6), full_batches=True)
    assert "no C++ compiler" in caplog.text
    assert not wrapped.is_compiled
    assert wrapped.receptive_field == 3
    assert torch.equal(output, network(volume))


def test_compile_unavailable_is_harmless(monkeypatch):
    def raising_compile(network, **kwargs):
        raise RuntimeError("torch.compile is not supported on this platform")

    monkeypatch.setattr(torch, "compile", raising_compile)
    wrapped = CompiledNetwork(BoxFilter())
    assert not wrapped.is_compiled
    volume = torch.randn(1, 1, 3, 3, 3)
    assert torch.equal(wrapped(volume), BoxFilter()(volume))


def test_channels_last_chosen_for_conv3d_on_cpu():
    cpu = torch.device("cpu")
    assert performance.prefers_channels_last(torch.nn.Conv3d(1, 1, 3), cpu)
    assert not performance.prefers_channels_last(identity, cpu)
    assert not performance.prefers_channels_last(torch.nn.Conv3d(1, 1, 3), torch.device("cuda"))
