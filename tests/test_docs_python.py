"""Run the Python examples of the README and the guides on the shipped samples, so the pages stay true.

Each example names placeholder files (``dicom_folder/``, ``thick.nii.gz``, ``scan.nii.gz``, a model file); the
test creates them from the shipped data in a temporary folder. Time budgets in the examples are shortened to a
few seconds, which is the only change made to their text.
"""

from __future__ import annotations

import re
import shutil
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = ["README.md", "docs/guide-ldct.md", "docs/guide-mri-sr.md", "docs/adaptation.md", "docs/simulation.md"]


def python_blocks(page: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / page).read_text(encoding="utf-8"), flags=re.DOTALL)


def shortened(block: str) -> str:
    """Return the block with every ``minutes=N`` budget cut to 0.02 minutes."""
    return re.sub(r"minutes=[0-9.]+", "minutes=0.02", block)


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    from pydicom.data import get_testdata_file

    data = files("medgan.data")
    shutil.copy(str(data / "ct_small_quarter_dose.nii.gz"), tmp_path / "scan.nii.gz")
    shutil.copy(str(data / "mri_thick_slices.nii.gz"), tmp_path / "thick.nii.gz")
    (tmp_path / "dicom_folder").mkdir()
    shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / "dicom_folder" / "slice.dcm")
    shipped = Path(str(files("medgan.models.shipped")))
    shutil.copy(shipped / "ldct-default.safetensors", tmp_path / "my-ct-model.safetensors")
    shutil.copy(shipped / "ldct-default.json", tmp_path / "my-ct-model.json")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize("page", PAGES)
def test_page_examples_run(workspace, page):
    import medgan

    blocks = python_blocks(page)
    assert blocks, f"{page} has no Python example"
    namespace: dict = {}
    if page == "docs/adaptation.md":
        # The page shows calls on a network and volumes the reader already has.
        namespace["sr_network"] = medgan.load_model("mri-sr-default", device="cpu").network
        namespace["ct_network"] = medgan.load_model("ldct-default", device="cpu").network
        namespace["volume"] = medgan.read_volume("thick.nii.gz")
        namespace["ct_volume"] = medgan.read_volume("scan.nii.gz")
    for block in blocks:
        exec(compile(shortened(block), str(ROOT / page), "exec"), namespace)
    if page in ("README.md", "docs/guide-ldct.md"):
        assert (workspace / "denoised.nii.gz").is_file()
    if page == "docs/guide-mri-sr.md":
        fine = medgan.read_volume("fine.nii.gz")
        assert fine.shape[2] == 4 * medgan.read_volume("thick.nii.gz").shape[2]
