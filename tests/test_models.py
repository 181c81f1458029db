import json
import pickle

import numpy as np
import pytest
import torch

from medgan.inference.restorer import Restorer, load_model
from medgan.models import ModelCard, load_model_files, save_model, shipped_model_names
from medgan.models.files import sha256_of
from medgan.networks import build_network
from medgan.tasks import get_task


def trained_like_network() -> torch.nn.Module:
    torch.manual_seed(3)
    network = build_network("red-cnn-3d", {"channels": 4, "depth": 2})
    for parameter in network.parameters():
        torch.nn.init.normal_(parameter, std=0.05)
    return network


def card_for(network_kwargs) -> ModelCard:
    return ModelCard(task="ldct", network={"name": "red-cnn-3d", "kwargs": network_kwargs},
                     intensity=get_task("ldct").intensity.to_dict(), patch_size=(3, 8, 8), name="tiny")


def test_model_file_round_trip_gives_identical_outputs(tmp_path, ct_volume):
    network = trained_like_network()
    path = save_model(network, card_for({"channels": 4, "depth": 2}), tmp_path / "tiny.safetensors")
    assert (tmp_path / "tiny.json").is_file()
    loaded, card = load_model_files(path)
    x = torch.randn(1, 1, 3, 9, 11)
    with torch.no_grad():
        assert torch.equal(network.eval()(x), loaded(x))
    first = Restorer(network, card, device="cpu").restore(ct_volume)
    second = load_model(path, device="cpu").restore(ct_volume)
    assert np.array_equal(first.array, second.array)


def test_save_model_refuses_overwrite(tmp_path):
    network = trained_like_network()
    path = save_model(network, card_for({"channels": 4, "depth": 2}), tmp_path / "m.safetensors")
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite"):
        save_model(build_network("red-cnn-3d", {"channels": 4, "depth": 2}), card_for({"channels": 4, "depth": 2}),
                   path)
    assert path.read_bytes() == before


def test_checksum_mismatch_is_rejected(tmp_path):
    path = save_model(trained_like_network(), card_for({"channels": 4, "depth": 2}), tmp_path / "m.safetensors")
    other = save_model(build_network("red-cnn-3d", {"channels": 4, "depth": 2}),
                       card_for({"channels": 4, "depth": 2}), tmp_path / "other.safetensors")
    path.write_bytes(other.read_bytes())
    with pytest.raises(ValueError, match="SHA-256"):
        load_model_files(path)


def test_card_network_mismatch_is_rejected(tmp_path):
    path = save_model(trained_like_network(), card_for({"channels": 4, "depth": 2}), tmp_path / "m.safetensors")
    card = json.loads(path.with_suffix(".json").read_text())
    card["network"]["kwargs"]["channels"] = 8
    card["weights_sha256"] = ""
    path.with_suffix(".json").write_text(json.dumps(card))
    with pytest.raises((ValueError, RuntimeError)):
        load_model_files(path)


def test_pickle_payload_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path = tmp_path / "evil.safetensors"
    path.write_bytes(pickle.dumps({"weights": Payload()}))
    card = card_for({"channels": 4, "depth": 2})
    card.weights_sha256 = sha256_of(path)  # the checksum matches, so loading reaches the weights themselves
    path.with_suffix(".json").write_text(card.to_json())
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        load_model_files(path)
    assert not marker.exists()


def test_card_rejects_unknown_keys_and_versions():
    good = card_for({}).to_json()
    data = json.loads(good)
    data["surprise"] = 1
    with pytest.raises(ValueError, match="surprise"):
        ModelCard.from_json(json.dumps(data))
    data = json.loads(good)
    data["format_version"] = 99
    with pytest.raises(ValueError, match="format_version"):
        ModelCard.from_json(json.dumps(data))


def test_unknown_model_lists_shipped(tmp_path):
    with pytest.raises(FileNotFoundError, match="shipped models"):
        load_model_files(tmp_path / "missing.safetensors")


def test_shipped_default_model_loads():
    assert "ldct-default" in shipped_model_names()
    restorer = load_model("ldct-default", device="cpu")
    assert restorer.card.task == "ldct"
    assert restorer.card.metrics


def test_model_files_get_default_permissions(tmp_path):
    import os
    import stat

    umask = os.umask(0o022)
    os.umask(umask)
    path = save_model(trained_like_network(), card_for({"channels": 4, "depth": 2}), tmp_path / "m.safetensors")
    for written in (path, path.with_suffix(".json")):
        assert stat.S_IMODE(written.stat().st_mode) == 0o666 & ~umask
