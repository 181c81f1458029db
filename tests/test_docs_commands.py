"""Check the ``medgan`` commands shown in README.md and docs/*.md against the real click CLI.

What the checks cover:

- Every shell command in a fenced code block (any block but python, yaml, json and text) that runs medgan is
  collected: a line starting with ``medgan `` (also after a ``$ `` prompt), a part of an ``&&``, ``||``, ``;``
  or ``|`` chain, and ``python -m medgan ...`` or ``torchrun ... -m medgan ...``. Lines ending with a backslash
  are joined with the next ones, and ``#`` comments are dropped.
- Each command is parsed, not run: the group options (``-v``, ``-q``, ``--version``), the subcommand name, and
  then the subcommand's options and arguments through ``make_context``. This catches an unknown subcommand, an
  unknown option, a wrong choice value, a value outside an option's range, a wrong number of values, a missing
  required option and a missing required argument. A failure names the file and line of the command.
- Parsing runs in a temporary folder holding links to the repository's tracked folders (configs/, medgan/,
  scripts/, docs/, tests/). A path there must exist, so a renamed config or sample fails the test. Any other
  path that an option requires to exist (``scan.nii.gz``, ``dicom_folder/``) is a placeholder: an empty file or
  folder is created for it in the temporary folder first.
- Checks that span options, such as ``--format`` given for a run folder in ``medgan export``, happen when the
  command runs and are not covered, except for the commands below.

The cheap, self-contained commands are also run with click's CliRunner in a temporary folder and their outputs
checked: the README's ldct and mri-sr infer commands, ``medgan models``, ``medgan --version`` and the README's
evaluation on configs/eval/ldct-held-out.csv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import click
import nibabel as nib
import numpy as np
import pytest
from click.testing import CliRunner

import docs_commands_support
import medgan
from docs_commands_support import REPO, doc_commands
from medgan.cli.main import cli
from medgan.cli.options import progress_enabled

# Tracked top-level folders: paths under them are real files of the repository and must exist.
REPO_FOLDERS = ("configs", "medgan", "scripts", "docs", "tests")


def make_placeholders(command: click.Command, ctx: click.Context, args: list[str], workdir: Path) -> None:
    """Create an empty file or folder in ``workdir`` for each missing path that must exist, outside the repo's folders."""
    opts, _, _ = command.make_parser(ctx).parse_args(list(args))
    for param in command.params:
        if not isinstance(param.type, click.Path) or not param.type.exists or param.name not in opts:
            continue
        values = opts[param.name]
        for value in values if isinstance(values, (list, tuple)) else [values]:
            if not isinstance(value, str):
                continue
            path = Path(value)
            if path.is_absolute() or path.exists() or path.parts[0] in REPO_FOLDERS:
                continue
            target = workdir / path
            assert target.resolve().is_relative_to(workdir.resolve()), f"placeholder {value} would leave {workdir}"
            as_folder = not param.type.file_okay or (param.type.dir_okay and (value.endswith("/") or not path.suffix))
            if as_folder:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.touch()


def check_command(args: list[str], workdir: Path) -> None:
    """Parse ``medgan ARGS`` with click as the CLI would, raising click's error on bad usage."""
    try:
        group_ctx = cli.make_context("medgan", list(args))
    except click.exceptions.Exit as stop:
        assert stop.exit_code == 0
        return
    rest = [*getattr(group_ctx, "_protected_args", []), *group_ctx.args]
    if not rest:
        raise click.UsageError("no subcommand after medgan", ctx=group_ctx)
    name, command, sub_args = cli.resolve_command(group_ctx, rest)
    assert command is not None and name is not None

    make_placeholders(command, click.Context(command, info_name=name, parent=group_ctx), sub_args, workdir)
    try:
        command.make_context(name, list(sub_args), parent=group_ctx)
    except click.exceptions.Exit as stop:
        assert stop.exit_code == 0


@pytest.fixture
def workdir(tmp_path, monkeypatch) -> Path:
    """A temporary current folder with links to the repository's tracked folders."""
    for folder in REPO_FOLDERS:
        (tmp_path / folder).symlink_to(REPO / folder, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_docs_contain_commands():
    commands = doc_commands()
    subcommands = {command.args[0] for command in commands if command.args}

    assert len(commands) >= 50
    assert {"infer", "train", "export", "simulate", "evaluate", "models"} <= subcommands


def test_joined_and_chained_commands_found():
    by_text = {" ".join(command.args): command for command in doc_commands()}

    setup = by_text.get("infer medgan/data/ct_small_quarter_dose.nii.gz -o ct_small_denoised.nii.gz")
    assert setup is not None and "&&" in setup.text
    joined = [command for command in doc_commands() if "--baselines" in command.args and command.path.name == "README.md"]
    assert joined and "-o" in joined[0].args
    assert any(command.args[:1] == ("train",) and "torchrun" in command.text for command in doc_commands())


def test_doc_commands_parse(workdir):
    failures = []
    for command in doc_commands():
        try:
            check_command(list(command.args), workdir)
        except click.ClickException as error:
            failures.append(f"{command.where}: medgan {' '.join(command.args)}\n    {error.format_message()}")
    assert not failures, "documented commands the CLI rejects:\n" + "\n".join(failures)


@pytest.mark.parametrize("args, message", [
    (["infer", "scan.nii.gz", "--overlapp", "0.5"], "No such option"),
    (["infer", "scan.nii.gz", "--precision", "fp8"], "fp8"),
    (["infer", "scan.nii.gz", "--overlap", "0.99"], "0.99"),
    (["simulate", "scan.nii.gz", "--dose-fraction", "0.25"], "--output"),
    (["evaluate", "--protocol", "ldct-abdomen"], "--output-dir"),
    (["infer"], "SCAN"),
    (["denoise", "scan.nii.gz"], "denoise"),
    (["train", "--config", "configs/no-such-recipe.yaml"], "no-such-recipe"),
])
def test_check_command_rejects_bad_usage(workdir, args, message):
    with pytest.raises(click.ClickException) as error:
        check_command(args, workdir)

    assert message in error.value.format_message()


def test_placeholder_created_outside_repo(workdir):
    check_command(["infer", "dicom_folder/", "-o", "denoised.nii.gz"], workdir)
    check_command(["simulate", "t1.nii.gz", "-o", "t1_4mm.nii.gz", "--task", "mri-sr", "--slice-thickness-mm", "4"],
                  workdir)

    assert (workdir / "dicom_folder").is_dir()
    assert (workdir / "t1.nii.gz").is_file()


def test_typo_in_doc_fails(tmp_path, monkeypatch, workdir):
    doc = tmp_path / "typo.md"
    doc.write_text("# Typo\n\n```bash\nmedgan infer scan.nii.gz -o out.nii.gz \\\n    --batch-sise 8\n```\n",
                   encoding="utf-8")
    monkeypatch.setattr(docs_commands_support, "DOC_FILES", [doc])
    monkeypatch.setattr(docs_commands_support, "REPO", tmp_path)

    with pytest.raises(AssertionError, match=r"typo.md:4: medgan infer .*--batch-sise"):
        test_doc_commands_parse(workdir)


def readme_command(prefix: str) -> list[str]:
    """Return the README command whose arguments start with ``prefix``, as documented."""
    matches = [list(command.args) for command in doc_commands()
               if command.path.name == "README.md" and " ".join(command.args).startswith(prefix)]
    assert matches, f"README.md has no command starting with 'medgan {prefix}'"
    return matches[0]


def invoke(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, prog_name="medgan", catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_readme_ldct_infer_runs(workdir):
    invoke(readme_command("infer medgan/data/ct_small_quarter_dose.nii.gz -o ct_small_denoised.nii.gz"))

    source = nib.load(REPO / "medgan" / "data" / "ct_small_quarter_dose.nii.gz")
    output = nib.load(workdir / "ct_small_denoised.nii.gz")
    assert output.shape == source.shape
    assert np.allclose(output.affine, source.affine, atol=1e-6)
    assert (workdir / "ct_small_denoised_preview.png").is_file()
    assert json.loads((workdir / "ct_small_denoised.json").read_text())


def test_readme_mri_sr_infer_runs(workdir):
    invoke(readme_command("infer --task mri-sr medgan/data/mri_thick_slices.nii.gz"))

    source = nib.load(REPO / "medgan" / "data" / "mri_thick_slices.nii.gz")
    output = nib.load(workdir / "mri_fine_slices.nii.gz")
    assert output.shape[:2] == source.shape[:2]
    assert output.shape[2] == 4 * source.shape[2]
    assert (workdir / "mri_fine_slices.json").is_file()


def test_models_and_version_run(workdir):
    listing = invoke(["models"])
    version = invoke(["--version"])

    assert "ldct-default" in listing
    assert "mri-sr-default" in listing
    assert medgan.__version__ in version


def test_readme_evaluate_runs(workdir):
    args = readme_command("evaluate --model ldct-default --pairs configs/eval/ldct-held-out.csv")
    output_dir = workdir / "eval-tmp"
    args[args.index("-o") + 1] = str(output_dir)
    invoke(args)

    record = json.loads((output_dir / "evaluation.json").read_text())
    assert record
    assert (output_dir / "evaluation.md").is_file()
    assert (output_dir / "psnr.png").is_file()


def completion_output(env_value: str, extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "_MEDGAN_COMPLETE": env_value, **(extra_env or {})}
    code = "from medgan.cli.main import cli; cli(prog_name='medgan')"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell, marker", [
    ("bash", "complete -o nosort -F _medgan_completion medgan"),
    ("zsh", "compdef _medgan_completion medgan"),
    ("fish", "complete --no-files --command medgan"),
])
def test_completion_script_printed(shell, marker):
    result = completion_output(f"{shell}_source")

    assert result.returncode == 0, result.stderr
    assert marker in result.stdout


def test_completion_completes_subcommand():
    result = completion_output("bash_complete", {"COMP_WORDS": "medgan inf", "COMP_CWORD": "1"})

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["plain,infer"]


class FakeStderr:
    def __init__(self, tty: bool) -> None:
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@pytest.fixture
def info_level(monkeypatch):
    import logging

    monkeypatch.setattr(logging.getLogger(), "level", logging.INFO)


def test_progress_shown_on_terminal(monkeypatch, info_level):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stderr", FakeStderr(tty=True))

    assert progress_enabled()


def test_progress_hidden_when_not_tty(monkeypatch, info_level):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(sys, "stderr", FakeStderr(tty=False))

    assert not progress_enabled()


def test_progress_hidden_with_no_color(monkeypatch, info_level):
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setattr(sys, "stderr", FakeStderr(tty=True))

    assert not progress_enabled()


def test_progress_shown_with_empty_no_color(monkeypatch, info_level):
    monkeypatch.setenv("NO_COLOR", "")
    monkeypatch.setattr(sys, "stderr", FakeStderr(tty=True))

    assert progress_enabled()
