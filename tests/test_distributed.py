"""Two CPU processes over gloo train the same networks to identical weights."""

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from medgan.training import build_trainer
from tests.test_training import tiny_config


def worker(rank: int, world_size: int, folder: str) -> None:
    from pathlib import Path

    folder = Path(folder)
    dist.init_process_group("gloo", init_method=f"file://{folder / 'rendezvous'}", rank=rank,
                            world_size=world_size)
    try:
        torch.set_num_threads(1)
        config = tiny_config(folder / f"rank{rank}", steps=4, warmup=2, extra=["train.n_critic=2"])
        trainer = build_trainer(config, folder / "run")
        low, _ = trainer.sample_batch(1, torch.Generator().manual_seed(0))
        trainer.fit()
        torch.save({"generator": trainer.generator.state_dict(), "critic": trainer.critic.state_dict(),
                    "first_patch": trainer.sample_batch(1, trainer.data_generator)[0]},
                   folder / f"weights{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available in this build")
def test_two_gloo_ranks_hold_identical_weights(tmp_path):
    for rank in range(2):
        (tmp_path / f"rank{rank}").mkdir()
    mp.spawn(worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    first = torch.load(tmp_path / "weights0.pt", weights_only=True)
    second = torch.load(tmp_path / "weights1.pt", weights_only=True)
    for name in ("generator", "critic"):
        for key, value in first[name].items():
            assert torch.equal(value, second[name][key]), f"{name}.{key}"
    # Each rank draws its own patches.
    assert not torch.equal(first["first_patch"], second["first_patch"])
    # Only rank 0 writes the log and checkpoints.
    assert (tmp_path / "run" / "log.csv").is_file()
