"""``medgan evaluate`` end to end on tiny synthetic NIfTI volumes written by the tests."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from medgan.cli.errors import EXIT_INVALID_INPUT, EXIT_OUTPUT_EXISTS
from medgan.cli.main import cli
from medgan.evaluation.evaluator import ManifestError, load_manifest
from medgan.io import Volume, read_volume, write_volume
from medgan.transforms.mri import ThickSliceMRI


def run(*arguments):
    return CliRunner().invoke(cli, [str(a) for a in arguments], catch_exceptions=False)


def _phantom_hu(shape=(24, 24, 4)) -> np.ndarray:
    """Soft tissue at 40 HU with a 200 HU insert, air in the corners, and flat tissue away from the insert."""
    i, j = np.meshgrid(np.arange(shape[0]) - 11.5, np.arange(shape[1]) - 11.5, indexing="ij")
    plane = np.where(i**2 + j**2 < 15.5**2, 40.0, -1000.0)
    plane[(i - 4) ** 2 + (j - 4) ** 2 < 6] = 200.0
    return np.repeat(plane[:, :, None], shape[2], axis=2)


def _affine():
    affine = np.diag([0.8, 0.8, 2.0, 1.0])
    affine[:3, 3] = (-10.0, 5.0, 30.0)
    return affine


@pytest.fixture
def ct_pair(tmp_path):
    reference = _phantom_hu()
    noisy = reference + np.random.default_rng(0).normal(0, 30, reference.shape)
    paths = {}
    for name, array in (("reference", reference), ("input", noisy), ("candidate", 0.5 * (noisy + reference))):
        paths[name] = write_volume(Volume(array.astype(np.float32), _affine(), modality="CT"),
                                   tmp_path / f"{name}.nii.gz")
    return paths


def test_pair_mode_writes_report(tmp_path, ct_pair):
    output = tmp_path / "report"
    result = run("evaluate", "--reference", ct_pair["reference"], "--candidate", ct_pair["candidate"], "--input",
                 ct_pair["input"], "--protocol", "ldct-abdomen", "-o", output)
    assert result.exit_code == 0, result.output
    assert "ldct-abdomen: window 50/400 HU" in result.output
    report = json.loads((output / "evaluation.json").read_text())
    assert report["protocol"]["window_hu"] == [-150.0, 250.0]
    assert report["protocol"]["data_range"] == 1.0
    methods = [row["method"] for row in report["rows"]]
    assert methods == ["input", "candidate"]
    candidate = report["rows"][1]
    assert candidate["protocol"] == "ldct-abdomen"
    assert candidate["noise_std_ratio"] == pytest.approx(0.5, abs=0.05)
    assert abs(candidate["mean_bias_hu"]) < 5
    assert report["rows"][1]["psnr_db"] > report["rows"][0]["psnr_db"]
    psnr = report["means"]["candidate"]["psnr_db"]
    assert psnr["ci_low"] is None
    assert "one case" in psnr["note"]
    assert report["versions"]["numpy"] == np.__version__
    markdown = (output / "evaluation.md").read_text()
    assert "| candidate |" in markdown
    assert "(CI n/a)" in markdown
    assert (output / "psnr.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (output / "figures" / "candidate.png").is_file()


def test_pair_mode_refuses_overwrite(tmp_path, ct_pair):
    output = tmp_path / "report"
    arguments = ("evaluate", "--reference", ct_pair["reference"], "--candidate", ct_pair["candidate"],
                 "--protocol", "ct-hu", "-o", output)
    assert run(*arguments).exit_code == 0
    before = (output / "evaluation.json").read_bytes()
    result = run(*arguments)
    assert result.exit_code == EXIT_OUTPUT_EXISTS
    assert "--overwrite" in result.output
    assert (output / "evaluation.json").read_bytes() == before
    assert run(*arguments, "--overwrite").exit_code == 0


def test_rejects_mismatched_grids(tmp_path, ct_pair):
    shifted_affine = _affine()
    shifted_affine[0, 3] += 0.01
    shifted = write_volume(Volume(_phantom_hu().astype(np.float32), shifted_affine), tmp_path / "shifted.nii.gz")
    result = run("evaluate", "--reference", ct_pair["reference"], "--candidate", shifted, "--protocol", "ct-hu",
                 "-o", tmp_path / "report")
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "affines differ" in result.output
    assert "origin (-10, 5, 30)" in result.output
    assert "origin (-9.99, 5, 30)" in result.output
    assert not (tmp_path / "report").exists()
    cropped = write_volume(Volume(_phantom_hu((24, 24, 3)).astype(np.float32), _affine()), tmp_path / "cut.nii.gz")
    result = run("evaluate", "--reference", ct_pair["reference"], "--candidate", cropped, "--protocol", "ct-hu",
                 "-o", tmp_path / "report")
    assert result.exit_code == EXIT_INVALID_INPUT
    assert "shapes differ" in result.output
    assert not (tmp_path / "report" / "evaluation.json").exists()


def test_model_mode_with_baselines(tmp_path):
    generator = np.random.default_rng(4)
    lines = ["id,input,reference"]
    for number in range(2):
        reference = _phantom_hu() + generator.normal(0, 3, (24, 24, 4))
        noisy = reference + generator.normal(0, 40, reference.shape)
        for name, array in (("full", reference), ("low", noisy)):
            write_volume(Volume(array.astype(np.float32), _affine(), modality="CT"),
                         tmp_path / f"{name}{number}.nii.gz")
        lines.append(f"case{number},low{number}.nii.gz,full{number}.nii.gz")
    manifest = tmp_path / "test.csv"
    manifest.write_text("\n".join(lines) + "\n")

    output = tmp_path / "report"
    result = run("evaluate", "--model", "ldct-default", "--pairs", manifest, "--protocol", "ldct-abdomen",
                 "-o", output, "--baselines", "gaussian,nlm", "--device", "cpu", "--validation-case", "case1",
                 "--resamples", 200, "--figure-cases", 1)
    assert result.exit_code == 0, result.output

    report = json.loads((output / "evaluation.json").read_text())
    assert report["model"]["name"] == "ldct-default"
    assert [case["id"] for case in report["cases"]] == ["case0", "case1"]
    assert {row["method"] for row in report["rows"]} == {"input", "gaussian", "nlm", "model"}
    gaussian = report["baselines"]["parameters"]["gaussian"]
    assert gaussian["validation_case"] == "case1"
    assert len(gaussian["sigma_voxels"]) == 3
    assert set(report["baselines"]["parameters"]["nlm"]["per_case"]) == {"case0", "case1"}

    means = report["means"]
    assert means["model"]["psnr_db"]["ci_low"] is not None
    assert means["gaussian"]["psnr_db"]["mean"] > means["input"]["psnr_db"]["mean"]
    assert {(c["baseline"], c["metric"]) for c in report["comparisons"]} == {
        ("gaussian", "psnr_db"), ("gaussian", "ssim"), ("nlm", "psnr_db"), ("nlm", "ssim")}
    markdown = (output / "evaluation.md").read_text()
    below = [c for c in report["comparisons"] if c["below_baseline"]]
    for comparison in below:
        assert f"below baseline {comparison['baseline']}" in markdown
    assert report["figures"] == ["figures/case0.png"]
    assert (output / "figures" / "case0.png").read_bytes()[:4] == b"\x89PNG"


def test_mri_brain_pair_with_bspline(tmp_path):
    generator = np.random.default_rng(6)
    i, j, k = np.meshgrid(np.arange(12) - 5.5, np.arange(12) - 5.5, np.arange(16) - 7.5, indexing="ij")
    reference_array = np.where(i**2 + j**2 + (k / 1.5) ** 2 < 30, 500.0 + 20 * k, 5.0)
    reference = Volume(reference_array.astype(np.float32), np.diag([1.0, 1.0, 1.0, 1.0]), modality="MR")
    thick = ThickSliceMRI(4.0, slice_axis=2)(reference)
    candidate = reference.array + generator.normal(0, 5, reference.shape)
    paths = {"reference": write_volume(reference, tmp_path / "t1.nii.gz"),
             "input": write_volume(thick, tmp_path / "t1_4mm.nii.gz"),
             "candidate": write_volume(reference.with_array(candidate.astype(np.float32)), tmp_path / "sr.nii.gz")}
    output = tmp_path / "report"
    result = run("evaluate", "--reference", paths["reference"], "--candidate", paths["candidate"], "--input",
                 paths["input"], "--protocol", "mri-brain", "-o", output, "--baselines", "linear,bspline")
    assert result.exit_code == 0, result.output
    report = json.loads((output / "evaluation.json").read_text())
    assert [row["method"] for row in report["rows"]] == ["linear", "bspline", "candidate"]
    candidate_row = report["rows"][2]
    assert candidate_row["dc_relative_rmse"] < 0.02
    assert "mean_bias_hu" not in candidate_row
    assert report["protocol"]["mask_fraction"] == 0.1
    assert (output / "figures" / "sr.png").is_file()
    markdown = (output / "evaluation.md").read_text()
    assert "HU columns" not in markdown
    assert "Bias is" not in markdown


def test_baselines_wrong_for_protocol(tmp_path, ct_pair):
    result = run("evaluate", "--reference", ct_pair["reference"], "--candidate", ct_pair["candidate"], "--input",
                 ct_pair["input"], "--protocol", "ct-hu", "-o", tmp_path / "r", "--baselines", "bspline")
    assert result.exit_code == 2
    assert "do not apply to protocol ct-hu" in result.output


def test_manifest_errors(tmp_path):
    (tmp_path / "a.nii.gz").write_bytes(b"")
    manifest = tmp_path / "cases.csv"
    manifest.write_text("input,reference\na.nii.gz,missing.nii.gz\n")
    with pytest.raises(ManifestError, match="reference 'missing.nii.gz' was not found"):
        load_manifest(manifest)
    manifest.write_text("input\na.nii.gz\n")
    with pytest.raises(ManifestError, match="has no reference"):
        load_manifest(manifest)
    listing = tmp_path / "cases.json"
    listing.write_text(json.dumps({"cases": [{"input": "a.nii.gz", "reference": "a.nii.gz"},
                                             {"input": "a.nii.gz", "reference": "a.nii.gz"}]}))
    with pytest.raises(ManifestError, match="repeats the case ids a"):
        load_manifest(listing)


def test_rotated_grid_mismatch_names_angle(tmp_path, ct_pair):
    reference = read_volume(ct_pair["reference"])
    angle = np.radians(10.0)
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0.0], [np.sin(angle), np.cos(angle), 0.0], [0.0, 0.0, 1.0]])
    rotated_affine = reference.affine.copy()
    rotated_affine[:3, :3] = rotation @ reference.affine[:3, :3]
    rotated = write_volume(Volume(reference.array, rotated_affine), tmp_path / "rotated.nii.gz")
    result = run("evaluate", "--reference", ct_pair["reference"], "--candidate", rotated, "--protocol", "ct-hu",
                 "-o", tmp_path / "report")

    assert result.exit_code == EXIT_INVALID_INPUT
    assert "rotated by up to 10 degrees" in result.output
    assert "oblique: RAS directions i (0.9848, 0.1736, 0)" in result.output
