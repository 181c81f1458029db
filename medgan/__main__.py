"""``python -m medgan``, also the entry point for ``torchrun --nproc-per-node K -m medgan train ...``."""

from medgan.cli.main import cli

if __name__ == "__main__":
    cli(prog_name="medgan")
