"""Processes killed with SIGKILL while writing: the target keeps its old content and runs resume."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import yaml

from medgan.training.checkpoints import load_checkpoint

pytestmark = pytest.mark.skipif(os.name != "posix", reason="SIGKILL needs a POSIX system")


def wait_for(condition, timeout_s=120.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return False


def test_killed_writer_leaves_target_untouched(tmp_path):
    target = tmp_path / "out.nii.gz"
    target.write_bytes(b"old result")
    started = tmp_path / "started"
    script = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from medgan.io import atomic_output
        with atomic_output(Path({str(target)!r}), overwrite=True) as temporary:
            Path(temporary).write_bytes(b"half of a new res")
            Path({str(started)!r}).touch()
            time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", script])
    try:
        assert wait_for(started.exists), "the writer never started"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert target.read_bytes() == b"old result"
    leftovers = sorted(p.name for p in tmp_path.iterdir())
    visible = [name for name in leftovers if not name.startswith(".")]
    assert visible == ["out.nii.gz", "started"]


def test_killed_training_resumes_from_last_checkpoint(tmp_path):
    from click.testing import CliRunner

    from medgan.cli.main import cli
    from tests.test_training import tiny_config

    config = tiny_config(tmp_path, steps=400, warmup=400, extra=["train.checkpoint_every=2"])
    config_file = tmp_path / "c.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict()))
    run_dir = tmp_path / "run"
    process = subprocess.Popen([sys.executable, "-m", "medgan", "-q", "train", "--config", str(config_file),
                                "--run-dir", str(run_dir)])
    try:
        # latest.pt is refreshed just after each step file, so once step 6 exists latest.pt contains step 4 or later.
        assert wait_for(lambda: (run_dir / "checkpoints" / "step-0000006.pt").exists()), "no checkpoint written"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    state = load_checkpoint(run_dir)  # the latest complete checkpoint reads back
    killed_at = int(state["step"])
    assert killed_at >= 4
    result = CliRunner().invoke(cli, ["-q", "train", "--run-dir", str(run_dir), "--resume",
                                      "--set", f"train.steps={killed_at + 2}"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert int(load_checkpoint(run_dir)["step"]) == killed_at + 2
