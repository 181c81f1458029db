"""Readers of the package data that the recipe scripts use: InVesalius projects and brainbrowser MINC examples."""

from __future__ import annotations

import gzip
import importlib.util
import io
import json
import plistlib
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from medgan.io import write_volume

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}", SCRIPTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_inv3(path: Path, stack: np.ndarray, spacing=(0.9, 0.8, 1.5), modality="CT") -> None:
    plist = {"modality": modality, "spacing": list(spacing),
             "matrix": {"dtype": "int16", "filename": "matrix.dat", "shape": list(stack.shape)}}
    with tarfile.open(path, "w:gz") as archive:
        add_member(archive, "tmpproject/main.plist", plistlib.dumps(plist))
        add_member(archive, "tmpproject/matrix.dat", stack.astype("<i2").tobytes())


def test_invesalius_project_keeps_hu_and_spacing(tmp_path):
    prepare = load_script("prepare_ldct_data")
    rng = np.random.default_rng(0)
    stack = rng.integers(-1024, 2000, size=(3, 5, 4)).astype(np.int16)  # (slices, rows, columns)
    stack[0, 0, 0] = -2000  # padding outside the field of view
    write_inv3(tmp_path / "scan.inv3", stack)

    volume = prepare.read_invesalius_project(tmp_path / "scan.inv3")

    assert volume.shape == (4, 5, 3)  # (i, j, k) = (columns, rows, slices)
    assert volume.array[1, 2, 0] == stack[0, 2, 1]
    assert volume.array[0, 0, 0] == -1024.0
    assert np.allclose(volume.spacing_mm, (0.9, 0.8, 1.5))
    assert volume.modality == "CT"


def test_invesalius_project_rejects_other_files(tmp_path):
    prepare = load_script("prepare_ldct_data")
    (tmp_path / "notes.inv3").write_text("not a project")
    write_inv3(tmp_path / "mr.inv3", np.zeros((1, 2, 2), np.int16), modality="MR")

    with pytest.raises(SystemExit, match="not a readable InVesalius CT project"):
        prepare.read_invesalius_project(tmp_path / "notes.inv3")
    with pytest.raises(SystemExit, match="expected a CT project"):
        prepare.read_invesalius_project(tmp_path / "mr.inv3")
    write_inv3(tmp_path / "flat.inv3", np.zeros((1, 2, 2), np.int16), spacing=(0.9, 0.0, 1.5))
    with pytest.raises(SystemExit, match="spacing must be 3 positive sizes"):
        prepare.read_invesalius_project(tmp_path / "flat.inv3")
    data = (tmp_path / "mr.inv3").read_bytes()
    (tmp_path / "cut.inv3").write_bytes(data[: len(data) // 2])
    with pytest.raises(SystemExit, match="not a readable InVesalius CT project"):
        prepare.read_invesalius_project(tmp_path / "cut.inv3")


def write_brainbrowser(path: Path, array_xzy: np.ndarray) -> dict:
    header = {"order": ["xspace", "zspace", "yspace"],
              "xspace": {"start": 10.0, "space_length": array_xzy.shape[0], "step": -1.0,
                         "direction_cosines": [1.0, 0.0, 0.0]},
              "zspace": {"start": -5.0, "space_length": array_xzy.shape[1], "step": 2.0,
                         "direction_cosines": [0.0, 0.0, 1.0]},
              "yspace": {"start": 3.0, "space_length": array_xzy.shape[2], "step": 1.0,
                         "direction_cosines": [0.0, 1.0, 0.0]}}
    folder = "package/examples/models"
    with tarfile.open(path, "w:gz") as archive:
        for name in ("structural1", "structural2"):
            add_member(archive, f"{folder}/{name}.mnc.header.gz", gzip.compress(json.dumps(header).encode()))
            add_member(archive, f"{folder}/{name}.mnc.raw.gz", gzip.compress(array_xzy.astype(np.uint8).tobytes()))
    return header


def test_brainbrowser_scan_places_voxels_in_world(tmp_path):
    prepare = load_script("prepare_mri_data")
    array_xzy = np.arange(4 * 3 * 5, dtype=np.uint8).reshape(4, 3, 5)
    write_brainbrowser(tmp_path / "bb.tgz", array_xzy)

    scan = prepare.read_brainbrowser_scan(tmp_path / "bb.tgz", "structural1")

    assert scan.shape == (4, 5, 3)  # (x, y, z)
    assert scan.array[2, 4, 1] == array_xzy[2, 1, 4]
    # world = start + step * index along each axis's direction cosines
    assert np.allclose(scan.affine @ [2, 4, 1, 1], [10.0 - 2, 3.0 + 4, -5.0 + 2 * 1, 1])


def test_brainbrowser_damaged_tarball_rejected(tmp_path):
    prepare = load_script("prepare_mri_data")
    (tmp_path / "notes.tgz").write_text("not a tarball")
    with tarfile.open(tmp_path / "half.tgz", "w:gz") as archive:
        add_member(archive, "package/examples/models/structural1.mnc.header.gz", gzip.compress(b"{}"))

    with pytest.raises(SystemExit, match="cannot read structural1"):
        prepare.read_brainbrowser_scan(tmp_path / "notes.tgz", "structural1")
    with pytest.raises(SystemExit, match=r"cannot read structural1 \(KeyError"):
        prepare.read_brainbrowser_scan(tmp_path / "half.tgz", "structural1")


def test_k_axis_copies_keep_world_positions(tmp_path):
    prepare = load_script("prepare_mri_data")
    write_brainbrowser(tmp_path / "bb.tgz", np.arange(4 * 3 * 5, dtype=np.uint8).reshape(4, 3, 5))
    scan = prepare.read_brainbrowser_scan(tmp_path / "bb.tgz", "structural2")
    voxel = (3, 2, 1)
    world = scan.affine @ [*voxel, 1]

    for axis in range(3):
        moved = prepare.with_k_axis(scan, axis)
        order = [a for a in range(3) if a != axis] + [axis]
        new_voxel = [voxel[a] for a in order]
        assert moved.shape == tuple(scan.shape[a] for a in order)
        assert moved.array[tuple(new_voxel)] == scan.array[voxel]
        assert np.allclose(moved.affine @ [*new_voxel, 1], world)
        write_volume(moved, tmp_path / f"k{axis}.nii.gz")
