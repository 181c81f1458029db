"""``medgan train``: train a generator and critic from a YAML config."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import sys
from pathlib import Path

import click

from medgan.cli.options import overwrite_option, progress_enabled

logger = logging.getLogger("medgan.cli")


@click.command()
@click.option("--task", default=None,
              help="Task to train (ldct or mri-sr); sets the config's task. Must match the task in the config file "
                   "when that file names one.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=None, help="YAML training config, for example configs/ldct.yaml. With --resume and no "
                                 "--config, the run folder's config.yaml is used.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config value, e.g. --set train.steps=500 --set data.patch_size=[8,48,48]. "
                   "Values are parsed as YAML.")
@click.option("--run-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the resolved config, log.csv and checkpoints. Default: the config's run_dir.")
@click.option("--resume", is_flag=True, default=False,
              help="Continue the run in --run-dir (or the config's run_dir) from its latest checkpoint.")
@overwrite_option
def train(task: str | None, config_path: Path | None, overrides: tuple[str, ...], run_dir: Path | None,
          resume: bool, overwrite: bool) -> None:
    """Train a 3D GAN restorer: n_critic critic steps with gradient penalty per generator step.

    \b
    Examples:
      medgan train --task ldct --config configs/ldct.yaml --set train.steps=1000
      medgan train --task mri-sr --config configs/mri_sr.yaml
      medgan train --run-dir runs/ldct-default --resume --set train.steps=4000
      torchrun --nproc-per-node 4 -m medgan train --config configs/ldct.yaml
    """
    from medgan.cli.errors import InvalidInput, OutputExists

    import yaml
    from tqdm import tqdm

    from medgan.config import ConfigError, load_config
    from medgan.training import build_trainer

    if config_path is None and resume:
        if run_dir is None:
            raise click.UsageError("--resume needs --run-dir or --config to find the run.")
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            raise click.BadParameter(f"{config_path} not found; pass --config.", param_hint="--run-dir")
    all_overrides = list(overrides) + ([f"task={task}"] if task else [])
    try:
        config = load_config(config_path, all_overrides)
    except (ConfigError, FileNotFoundError) as error:
        raise InvalidInput(str(error)) from error
    if task and config_path is not None:
        from_file = (yaml.safe_load(config_path.read_text(encoding="utf-8")) or {}).get("task")
        if from_file and from_file != task:
            raise click.BadParameter(f"--task {task} differs from the config's task {from_file!r}.",
                                     param_hint="--task")
    run_dir = run_dir or Path(config.run_dir)
    # The run's saved config names the folder it was written to, so --resume --config RUN/config.yaml finds it.
    config.run_dir = str(run_dir.resolve())
    checkpoints = run_dir / "checkpoints"
    # Under torchrun every rank runs this command; rank 0 alone prepares the run folder and shows progress.
    is_main = int(os.environ.get("RANK", "0")) == 0
    if checkpoints.exists() and not resume and not overwrite:
        raise OutputExists(f"{run_dir} already contains checkpoints; pass --resume to continue the run or "
                           "--overwrite to start again from scratch.")
    if resume and not checkpoints.exists():
        raise click.BadParameter(f"{run_dir} contains no checkpoints to resume.", param_hint="--resume")

    # Build everything and load the checkpoint before touching the run folder, so a config that does not fit
    # the data or the checkpoint leaves the folder as it was.
    try:
        trainer = build_trainer(config, run_dir, resume=resume)
        if resume:
            trainer.resume(run_dir)
    except (ValueError, FileNotFoundError) as error:
        raise InvalidInput(str(error)) from error
    except RuntimeError as error:
        raise InvalidInput(f"The checkpoint in {run_dir} does not fit this config's networks: {error}") from error

    file_handler = None
    if is_main:
        if checkpoints.exists() and not resume:
            shutil.rmtree(checkpoints)
            for name in ("log.csv", "split.json"):
                (run_dir / name).unlink(missing_ok=True)
            shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = yaml.safe_dump(config.to_dict(), sort_keys=False)
        (run_dir / "config.yaml").write_text(resolved, encoding="utf-8")
        _write_run_header(run_dir / "run.log", resolved, f"resumed at step {trainer.step}" if resume else "started")
        file_handler = _attach_run_log(run_dir / "run.log")

    # A bar only on a terminal; in a file the progress lines of medgan.training.run_log take its place.
    show_bar = progress_enabled() and is_main and sys.stderr.isatty()
    bar_filter = _DropProgressLines()
    if show_bar:
        for handler in logging.getLogger().handlers:
            handler.addFilter(bar_filter)
    try:
        with tqdm(total=config.train.steps, initial=trainer.step, unit="step", disable=not show_bar) as bar:
            def on_step(record: dict) -> None:
                bar.update(1)
                postfix = {key: f"{record[key]:.4g}" for key in ("generator_loss", "critic_loss", "val_psnr_db")
                           if key in record}
                bar.set_postfix(postfix, refresh=False)
                if "val_psnr_db" in record:
                    logger.info("step %d: validation PSNR %.2f dB, SSIM %.4f", record["step"], record["val_psnr_db"],
                                record["val_ssim"])

            trainer.fit(on_step)
    finally:
        for handler in logging.getLogger().handlers:
            handler.removeFilter(bar_filter)
        if file_handler is not None:
            logging.getLogger("medgan").removeHandler(file_handler)
            file_handler.close()
    if is_main:
        click.echo(f"Finished {config.train.steps} steps; run folder {run_dir}. "
                   f"Export a model with: medgan export {run_dir} -o model.safetensors")


class _DropProgressLines(logging.Filter):
    """Keep the periodic progress lines off the terminal while a progress bar shows the same numbers."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.name != "medgan.training.run_log"


def _write_run_header(path: Path, resolved_config: str, event: str) -> None:
    """Append versions, platform, command line and the resolved config to the run's log file."""
    import torch

    from medgan import __version__

    with open(path, "a", encoding="utf-8") as stream:
        stream.write(f"medgan {__version__}, torch {torch.__version__}, python {platform.python_version()}, "
                     f"{platform.platform()}\nargv: {' '.join(sys.argv)}\ncwd: {Path.cwd()}\n"
                     f"world size: {os.environ.get('WORLD_SIZE', '1')}\n{event}\nresolved config:\n"
                     + "".join(f"  {line}\n" for line in resolved_config.splitlines()))


def _attach_run_log(path: Path) -> logging.FileHandler:
    """Copy medgan's log records into the run's log file, with timestamps, at INFO or the more verbose level."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setLevel(min(logging.INFO, logging.getLogger("medgan").getEffectiveLevel()))
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger("medgan").addHandler(handler)
    return handler
