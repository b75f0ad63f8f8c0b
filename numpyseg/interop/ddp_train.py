"""When one CPU is not enough: train the PyTorch twin with DistributedDataParallel.

The network is numpyseg's own (its initialisation, or weights you give with --init),
run as its PyTorch twin (numpyseg.interop.torch_reference); the data come from
numpyseg's loaders, augmenter and batch maker (numpyseg.training), and the loss is
the same 0.5 * WBCE + 0.5 * (1 - soft MCC) (torch_reference.bce_mcc_loss), with Adam
(eps 1e-7, as numpyseg).  The result is a state dict (.pt) that
`numpyseg export OUT.pt --format npz --out weights.npz` turns into numpyseg weights.

    # two processes on this machine (CPU, gloo backend)
    python -m numpyseg.interop.ddp_train --nproc 2 --dataset drive --data-root DRIVE --out ddp.pt
    # all GPUs of one machine (nccl backend, one process per GPU)
    torchrun --nproc-per-node gpu -m numpyseg.interop.ddp_train --dataset drive --data-root DRIVE --out ddp.pt
    # two machines with 4 GPUs each: run on both, --node-rank 0 on the one named by --master-addr
    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 4 --master-addr HOST --master-port 29500 \\
        -m numpyseg.interop.ddp_train --dataset drive --data-root DRIVE --out ddp.pt

Data parallelism.  Every process holds the whole model; each step, process r of R
takes its --batch-size images from the step's R * batch-size images (the same epoch
plan on every process, drawn from --seed), computes the loss of its own images and
its gradients, DistributedDataParallel averages the gradients over the processes,
and every process takes the same Adam step, so the weights stay identical.  The soft
MCC is therefore taken per process (over its own images), the BCE mean likewise.
BatchNorm (SA-UNet v1) uses each process's own batch statistics.

No validation, scheduler or early stopping here: `numpyseg evaluate` scores the
imported weights.  Rank 0 writes OUT.pt after every epoch (atomically).
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from numpyseg.interop.weights import require


@dataclass
class Job:
    """What one process needs: the data/model config, the output and the start weights."""

    config: object          # numpyseg.training.config.TrainConfig (data, model, loss, batches)
    out: Path                # the .pt state dict written by rank 0
    init: str | None = None  # numpyseg weights to start from (None: numpyseg's initialisation)
    backend: str = "auto"    # 'gloo' (CPU), 'nccl' (GPUs), 'auto': nccl when CUDA is available


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m numpyseg.interop.ddp_train",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="the state dict to write (.pt)")
    parser.add_argument("--nproc", type=int, default=0,
                        help="start this many processes here (CPU); 0: started by torchrun, or one process")
    parser.add_argument("--backend", choices=["auto", "gloo", "nccl"], default="auto")
    parser.add_argument("--init", default=None, help="numpyseg weights (.npz) to start from")
    parser.add_argument("--dataset", default="synthetic", help="as numpyseg train --dataset")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--synthetic-count", type=int, default=20)
    parser.add_argument("--synthetic-size", type=int, default=128)
    parser.add_argument("--arch", default="sa_unetv2")
    parser.add_argument("--base-channels", type=int, default=16)
    parser.add_argument("--block-size", type=int, default=7)
    parser.add_argument("--dropblock-rate", type=float, default=0.15)
    parser.add_argument("--batch-size", type=int, default=2, help="images per process and step")
    parser.add_argument("--patch-size", type=int, default=0, help="0: whole padded images")
    parser.add_argument("--steps-per-epoch", type=int, default=0, help="0: the images' area about once")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--pos-weight", type=float, default=1.0)
    parser.add_argument("--no-augment", dest="augment", action="store_false")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def job_from_args(args) -> Job:
    """The Job of parsed arguments (TrainConfig checks every value; all images are trained on)."""
    from numpyseg.training.config import TrainConfig

    config = TrainConfig(dataset=args.dataset, data_root=args.data_root, synthetic_count=args.synthetic_count,
                         synthetic_size=args.synthetic_size, arch=args.arch, base_channels=args.base_channels,
                         block_size=args.block_size, dropblock_rate=args.dropblock_rate,
                         batch_size=args.batch_size, patch_size=args.patch_size,
                         steps_per_epoch=args.steps_per_epoch, epochs=args.epochs, lr=args.lr,
                         pos_weight=args.pos_weight, augment=args.augment, seed=args.seed, val_count=0)
    return Job(config=config, out=Path(args.out), init=args.init, backend=args.backend)


def initial_model(job: Job):
    """The numpyseg model training starts from: --init's weights, or a fresh one seeded by --seed."""
    from numpyseg.inference import load_model
    from numpyseg.models.unet import build_model

    if job.init:
        return load_model(job.init)[0]
    c = job.config
    return build_model({"arch": c.arch, "base_channels": c.base_channels, "dropblock_rate": c.dropblock_rate,
                        "block_size": c.block_size, "in_channels": 3, "seed": c.seed})


def as_nchw(torch, array: np.ndarray, device):
    """(N, H, W, C) float32 array -> (N, C, H, W) tensor on `device`."""
    return torch.from_numpy(np.ascontiguousarray(array.transpose(0, 3, 1, 2))).to(device)


def train_process(rank: int, world: int, job: Job) -> None:
    """The training loop of one process (rank `rank` of `world`); the process group is set up here."""
    torch = require("torch", "parity")
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from numpyseg.atomic import atomic_write
    from numpyseg.interop.torch_reference import bce_mcc_loss, torch_twin
    from numpyseg.training import batches
    from numpyseg.training.samples import load_training_samples

    cuda = job.backend == "nccl" or (job.backend == "auto" and torch.cuda.is_available())
    local = int(os.environ.get("LOCAL_RANK", rank))
    device = torch.device(f"cuda:{local}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    else:  # share this machine's cores between its processes instead of oversubscribing them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    dist.init_process_group("nccl" if cuda else "gloo", rank=rank, world_size=world)
    try:
        c = job.config
        torch.manual_seed(c.seed * 1000 + rank)  # DropBlock masks differ between processes
        twin = torch_twin(initial_model(job)).to(device)
        model = DistributedDataParallel(twin, device_ids=[local] if cuda else None)
        optimizer = torch.optim.Adam(model.parameters(), lr=c.lr, eps=1e-7)
        samples = load_training_samples(c)
        size = batches.batch_size_hw(c, samples)
        plan_rng = np.random.default_rng(c.seed)  # the same plan on every process
        augmenter = batches.make_augmenter(c, np.random.default_rng([c.seed, rank]))
        steps = c.steps_per_epoch or batches.default_steps([s.shape for s in samples], c.batch_size * world,
                                                           c.patch_size)
        for epoch in range(1, c.epochs + 1):
            total = 0.0
            for step in batches.plan_epoch(plan_rng, len(samples), c.batch_size * world, steps):
                mine = step[rank * c.batch_size:(rank + 1) * c.batch_size]
                images, labels, masks = batches.make_batch(samples, mine, size, augmenter, c.loss_fov)
                model.train()
                loss = bce_mcc_loss(model(as_nchw(torch, images, device)), as_nchw(torch, labels, device),
                                    as_nchw(torch, masks, device), c.bce_weight, c.mcc_weight, c.pos_weight)
                optimizer.zero_grad()
                loss.backward()  # DistributedDataParallel averages the gradients here
                optimizer.step()
                total += float(loss.detach())
            mean = torch.tensor([total / steps], device=device)
            dist.all_reduce(mean)
            if rank == 0:
                state = {k: v.detach().cpu() for k, v in twin.state_dict().items()}
                atomic_write(job.out, lambda f: torch.save(state, f))
                print(f"epoch {epoch}/{c.epochs}: train loss {float(mean) / world:.4f} "
                      f"({world} processes) -> {job.out}", flush=True)
        check_same_weights(torch, dist, twin, rank, world)
    finally:
        dist.destroy_process_group()


def check_same_weights(torch, dist, twin, rank: int, world: int) -> None:
    """Check that every process ends with the same weights (DDP keeps them so); rank 0 says it.

    Raises:
        RuntimeError: the processes' weights differ (a broken gradient synchronisation).
    """
    flat = torch.cat([p.detach().double().flatten().cpu() for p in twin.parameters()])
    high, low = flat.clone(), flat.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    gap = float((high - low).abs().max())
    if gap > 0:
        raise RuntimeError(f"the {world} processes ended with different weights (largest gap {gap:g})")
    if rank == 0:
        print(f"weights identical on all {world} processes", flush=True)


def _spawned(rank: int, world: int, job: Job) -> None:
    """Entry point of a process started by --nproc (torch.multiprocessing.spawn)."""
    train_process(rank, world, job)


def free_port() -> int:
    """A TCP port nobody listens on now, for the processes to meet at."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(job: Job, nproc: int = 0) -> None:
    """Start training: `nproc` local processes, or this process as launched by torchrun (or alone).

    Raises:
        ConfigError: PyTorch is missing (pip install numpyseg[parity]); a bad --nproc or --out.
    """
    from numpyseg.errors import ConfigError

    require("torch", "parity")
    if job.out.suffix != ".pt":
        raise ConfigError(f"--out must name a .pt file, got {job.out}")
    if nproc < 0:
        raise ConfigError(f"--nproc must be >= 0, got {nproc}")
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")  # torchrun sets both; alone or --nproc: here
    os.environ.setdefault("MASTER_PORT", str(free_port()))
    if nproc:
        import torch.multiprocessing as mp

        mp.spawn(_spawned, args=(nproc, job), nprocs=nproc, join=True)
        return
    train_process(int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), job)


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        run(job_from_args(args), args.nproc)
    except (ValueError, OSError) as error:
        print(f"numpyseg.interop.ddp_train: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
