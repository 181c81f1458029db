import pytest

from medgan.config import ConfigError, load_config

BASE = ["data.volumes=[scan.nii.gz]"]


def test_defaults_fill_networks_from_task():
    config = load_config(None, BASE)
    assert config.generator.name == "red-cnn-3d"
    assert config.critic.name == "patch-critic-3d"


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.stepz=3", ["stepz", "train"]),
        ("train.steps=0", ["train.steps", "0"]),
        ("train.steps=many", ["train.steps", "many"]),
        ("data.dose_fraction_range=[0.5, 0.1]", ["dose_fraction_range"]),
        ("data.mode=unpaired", ["data.mode", "unpaired"]),
        ("loss.content=ssim9", ["loss.content", "ssim9"]),
        ("task=pet", ["pet", "ldct"]),
        ("data.patch_size=[8, 8]", ["patch_size"]),
    ],
)
def test_invalid_values_name_key_and_value(override, words):
    with pytest.raises(ConfigError) as error:
        load_config(None, [*BASE, override])
    for word in words:
        assert word in str(error.value)


def test_simulate_mode_needs_volumes():
    with pytest.raises(ConfigError, match="data.volumes"):
        load_config(None, [])


def test_yaml_file_and_relative_paths(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task: ldct\ndata:\n  volumes: [train]\ntrain:\n  steps: 5\n  lr_generator: 1e-3\n")
    config = load_config(path, ["train.batch_size=2"])
    assert config.train.steps == 5
    assert config.train.batch_size == 2
    assert config.train.lr_generator == pytest.approx(1e-3)
    assert config.data.volumes == [str(tmp_path / "train")]


def test_yaml_is_never_executed(tmp_path):
    path = tmp_path / "evil.yaml"
    path.write_text("task: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(path)


def test_override_needs_equals_sign():
    with pytest.raises(ConfigError, match="key.path=value"):
        load_config(None, [*BASE, "train.steps"])
