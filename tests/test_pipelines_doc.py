"""Run the Python examples of docs/pipelines.md, so the page stays true."""

from __future__ import annotations

import re
import shutil
from importlib.resources import files
from pathlib import Path

import nibabel as nib
import numpy as np

DOC = Path(__file__).resolve().parents[1] / "docs" / "pipelines.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)


def test_doc_examples_run(tmp_path, monkeypatch):
    blocks = python_blocks()
    assert len(blocks) == 3
    shutil.copy(Path(str(files("medgan.data") / "ct_small_quarter_dose.nii.gz")), tmp_path / "scan.nii.gz")
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {})

    python_api = nib.load(tmp_path / "scan_restored.nii.gz")
    monai_pipeline = nib.load(tmp_path / "restored" / "scan_restored.nii.gz")
    assert np.allclose(monai_pipeline.affine, python_api.affine, atol=1e-6)
    assert np.array_equal(np.asarray(monai_pipeline.dataobj, dtype=np.float32).squeeze(),
                          np.asarray(python_api.dataobj, dtype=np.float32).squeeze())
    assert (tmp_path / "ldct.ts").is_file()
    assert (tmp_path / "ldct.onnx").is_file()
    assert (tmp_path / "ldct.json").is_file()
