"""A tiny DDP training (gloo on CPU) measured with ``energymeter.measure``: the script torchrun
starts in tests/test_launchers_energy.py. Every rank measures the same way; the ``ranks``
setting decides what each one reads."""

from __future__ import annotations

import sys
import time

import torch
import torch.distributed as dist

import energymeter


def main(seconds_per_epoch: float) -> None:
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    x, y = torch.randn(256, 16), torch.randn(256, 1)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(16, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    with energymeter.measure("ddp", region="SE") as m:
        for epoch in range(2):
            with m.phase(f"epoch-{epoch}"):
                end = time.monotonic() + seconds_per_epoch
                while True:
                    opt.zero_grad()
                    loss = torch.nn.functional.mse_loss(model(x), y)
                    loss.backward()
                    opt.step()
                    # Every rank stops after the same number of steps (DDP needs it).
                    done = torch.tensor([float(time.monotonic() >= end)])
                    dist.all_reduce(done)
                    if done.item() > 0:
                        break
            m.log(epoch=epoch, loss=float(loss))
    dist.destroy_process_group()


if __name__ == "__main__":
    main(float(sys.argv[1]) if len(sys.argv) > 1 else 0.5)
