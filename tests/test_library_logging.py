"""The library prints nothing through logging unless the application configures logging."""

from __future__ import annotations

import subprocess
import sys

WARN = "import logging, medgan; logging.getLogger('medgan.inference.restorer').warning('far above air')"


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)


def test_warning_silent_without_configuration():
    assert run_python(WARN).stderr == ""


def test_warning_shown_once_configured():
    configured = WARN.replace("import logging, medgan;", "import logging, medgan; logging.basicConfig();")

    assert "far above air" in run_python(configured).stderr
