import hashlib
import json

import pytest
import torch
from safetensors.torch import save_file

from medgan.losses import build_loss
from medgan.losses.feature_networks import MedicalNetResNet3D, PerceptualAutoencoder3D, VGGFeatures
from medgan.losses.perceptual import AUTOENCODER_FORMAT

# Indices of the convolutions in torchvision.models.vgg16().features (torchvision 0.2 to 0.29).
TORCHVISION_VGG16_CONVS = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_autoencoder(path, channels=(4, 8)):
    """Write random autoencoder weights and the card that medgan pretrain-perceptual would write."""
    torch.manual_seed(0)
    network = PerceptualAutoencoder3D(channels=list(channels))
    save_file({k: v.contiguous() for k, v in network.state_dict().items()}, str(path))
    card = {"format": AUTOENCODER_FORMAT, "architecture_kwargs": network.architecture_kwargs(),
            "sha256": sha256(path), "steps": 0}
    path.with_suffix(".json").write_text(json.dumps(card))
    return path


def random_vgg16_state(last_index=None):
    """A torchvision-layout VGG16 state dict with random values, optionally cut after ``last_index``."""
    generator = torch.Generator().manual_seed(1)
    state = {}
    for key, tensor in VGGFeatures("vgg16").state_dict().items():
        if last_index is None or int(key.split(".")[1]) <= last_index:
            state[key] = 0.05 * torch.randn(tensor.shape, generator=generator)
    return state


def random_medicalnet_file(path, depth=10, shortcut="B"):
    """Save a MedicalNet-release-style file: ``{"state_dict": {"module.<key>": ...}}`` with a segmentation head."""
    torch.manual_seed(2)
    network = MedicalNetResNet3D(depth=depth, shortcut=shortcut)
    for module in network.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            module.running_mean.normal_(0, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    state = {f"module.{key}": value for key, value in network.state_dict().items()}
    state["module.conv_seg.0.weight"] = torch.zeros(512, 32, 2, 2, 2)
    torch.save({"state_dict": state, "epoch": 3}, path)
    return path


def pair(shape=(2, 1, 4, 16, 16), seed=3):
    generator = torch.Generator().manual_seed(seed)
    prediction = torch.randn(shape, generator=generator).mul(0.3).requires_grad_(True)
    target = torch.randn(shape, generator=generator).mul(0.3)
    return prediction, target


def check_loss_behaviour(loss, shape=(2, 1, 4, 16, 16)):
    prediction, target = pair(shape)
    assert loss(target, target).item() == pytest.approx(0.0, abs=1e-7)
    value = loss(prediction, target)
    assert value.dtype == torch.float32
    assert torch.isfinite(value)
    assert value.item() > 0
    value.backward()
    assert torch.isfinite(prediction.grad).all()
    assert prediction.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())
    loss.train()
    assert not loss.network.training


def test_vgg16_keys_follow_torchvision():
    keys = set(VGGFeatures("vgg16").state_dict())
    expected = {f"features.{i}.{kind}" for i in TORCHVISION_VGG16_CONVS for kind in ("weight", "bias")}
    assert keys == expected


def test_autoencoder_loss_behaviour(tmp_path):
    loss = build_loss("perceptual-ae", weights=str(write_autoencoder(tmp_path / "ae.safetensors")))
    check_loss_behaviour(loss)
    assert loss.layers == [0, 1]


def test_autoencoder_loss_checks_card_sha256(tmp_path):
    path = write_autoencoder(tmp_path / "ae.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    card["sha256"] = "0" * 64
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises(ValueError, match="SHA-256"):
        build_loss("perceptual-ae", weights=str(path))


def test_autoencoder_loss_checks_kwarg_sha256(tmp_path):
    path = write_autoencoder(tmp_path / "ae.safetensors")
    build_loss("perceptual-ae", weights=str(path), sha256=sha256(path))
    with pytest.raises(ValueError, match="kwarg sha256"):
        build_loss("perceptual-ae", weights=str(path), sha256="f" * 64)


def test_autoencoder_loss_needs_card(tmp_path):
    path = write_autoencoder(tmp_path / "ae.safetensors")
    path.with_suffix(".json").unlink()
    with pytest.raises(FileNotFoundError, match="card"):
        build_loss("perceptual-ae", weights=str(path))


@pytest.mark.parametrize("name", ["perceptual-ae", "perceptual-vgg25d", "perceptual-medicalnet"])
def test_perceptual_missing_file_named(tmp_path, name):
    missing = tmp_path / "nowhere.pth"
    with pytest.raises(FileNotFoundError) as error:
        build_loss(name, weights=str(missing), sha256="0" * 64)
    assert "weights" in str(error.value)
    assert str(missing) in str(error.value)


@pytest.mark.parametrize("name", ["perceptual-ae", "perceptual-vgg25d", "perceptual-medicalnet"])
def test_perceptual_weights_kwarg_required(name):
    with pytest.raises(ValueError, match="weights"):
        build_loss(name)


def test_vgg_loss_full_vgg16_file(tmp_path):
    path = tmp_path / "vgg16.pth"
    state = random_vgg16_state()
    state["classifier.0.weight"] = torch.zeros(2, 2)  # the classifier of a full VGG file is ignored
    torch.save(state, path)
    loss = build_loss("perceptual-vgg25d", weights=str(path), sha256=sha256(path), layers=["relu1_2"])
    check_loss_behaviour(loss, shape=(1, 1, 4, 8, 8))


def test_vgg_loss_truncated_safetensors_file(tmp_path):
    path = tmp_path / "vgg16-to-relu2_2.safetensors"
    save_file(random_vgg16_state(last_index=8), str(path))
    loss = build_loss("perceptual-vgg25d", weights=str(path), sha256=sha256(path), layers=["relu1_2", "relu2_2"],
                      layer_weights=[0.5, 2.0], axes=[0, 2], distance="mse")
    check_loss_behaviour(loss, shape=(1, 1, 4, 8, 8))


def test_vgg_loss_requires_sha256(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(random_vgg16_state(last_index=8), path)
    with pytest.raises(ValueError, match="sha256"):
        build_loss("perceptual-vgg25d", weights=str(path), layers=["relu1_2"])


def test_vgg_loss_sha256_mismatch(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(random_vgg16_state(last_index=8), path)
    with pytest.raises(ValueError) as error:
        build_loss("perceptual-vgg25d", weights=str(path), sha256="a" * 64, layers=["relu1_2"])
    assert sha256(path) in str(error.value)
    assert "a" * 64 in str(error.value)


def test_vgg_loss_rejects_vgg16_file_as_vgg19(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(random_vgg16_state(last_index=18), path)
    with pytest.raises(ValueError, match="does not fit"):
        build_loss("perceptual-vgg25d", weights=str(path), sha256=sha256(path), architecture="vgg19",
                   layers=["relu3_4"])


def test_vgg_loss_rejects_too_thin_slices(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(random_vgg16_state(last_index=15), path)
    loss = build_loss("perceptual-vgg25d", weights=str(path), sha256=sha256(path), layers=["relu3_3"])
    with pytest.raises(ValueError, match="axis 1"):
        loss(*pair(shape=(1, 1, 2, 8, 8)))


def test_vgg_loss_rejects_unknown_layer(tmp_path):
    path = tmp_path / "vgg16.pth"
    torch.save(random_vgg16_state(last_index=8), path)
    with pytest.raises(ValueError, match="relu9_9"):
        build_loss("perceptual-vgg25d", weights=str(path), sha256=sha256(path), layers=["relu9_9"])


def test_medicalnet_resnet10_release_layout(tmp_path):
    path = random_medicalnet_file(tmp_path / "resnet_10.pth")
    loss = build_loss("perceptual-medicalnet", weights=str(path), sha256=sha256(path))
    assert loss.network.depth == 10
    assert loss.network.shortcut == "B"
    check_loss_behaviour(loss)


def test_medicalnet_resnet18_shortcut_a_detected(tmp_path):
    path = random_medicalnet_file(tmp_path / "resnet_18.pth", depth=18, shortcut="A")
    loss = build_loss("perceptual-medicalnet", weights=str(path), layers=["conv1", "layer1"],
                      input_mean=0.0, input_std=0.5)
    assert loss.network.depth == 18
    assert loss.network.shortcut == "A"
    check_loss_behaviour(loss, shape=(1, 1, 4, 8, 8))


def test_medicalnet_depth_mismatch(tmp_path):
    path = random_medicalnet_file(tmp_path / "resnet_10.pth")
    with pytest.raises(ValueError, match="missing keys"):
        build_loss("perceptual-medicalnet", weights=str(path), depth=18)


def test_medicalnet_sha256_mismatch(tmp_path):
    path = random_medicalnet_file(tmp_path / "resnet_10.pth")
    with pytest.raises(ValueError, match="SHA-256"):
        build_loss("perceptual-medicalnet", weights=str(path), sha256="b" * 64)


def test_weights_file_with_code_rejected(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "hook": print}, path)
    with pytest.raises(ValueError, match="weights-only"):
        build_loss("perceptual-medicalnet", weights=str(path))
