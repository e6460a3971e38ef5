"""Train a small numpy MLP for about ten seconds inside ``energymeter.measure()``.

    python examples/train_mlp.py             # measured in-process
    energymeter run -- python examples/train_mlp.py   # or wrapped by the CLI

Each epoch is a phase; ``m.log`` stamps loss and accuracy with the energy used so far, so an
energy-to-accuracy curve can be drawn from the report (``report.to_dataframe("logs")``).
Under ``energymeter run`` the script's own report (with phases) is written beside the CLI's
report of the whole process. The ``ENERGYMETER_*`` variables (``ENERGYMETER_OUT``,
``ENERGYMETER_REGION``...) apply.
"""

from __future__ import annotations

import argparse

import numpy as np

from energymeter import Meter, measure


def make_data(rng: np.random.Generator, n: int, dim: int, classes: int):
    centers = rng.normal(size=(classes, dim)) * 0.25
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(size=(n, dim))
    return x.astype(np.float32), y


def train(m: Meter, epochs: int, n: int, hidden: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    dim, classes, batch, lr = 64, 10, 256, 0.05
    x, y = make_data(rng, n, dim, classes)
    w1 = (rng.normal(size=(dim, hidden)) / np.sqrt(dim)).astype(np.float32)
    w2 = (rng.normal(size=(hidden, classes)) / np.sqrt(hidden)).astype(np.float32)
    accuracy = 0.0
    for epoch in range(1, epochs + 1):
        with m.phase(f"epoch-{epoch}"):
            order = rng.permutation(n)
            losses = []
            for start in range(0, n, batch):
                idx = order[start:start + batch]
                xb, yb = x[idx], y[idx]
                h = np.maximum(xb @ w1, 0.0)
                logits = h @ w2
                logits -= logits.max(axis=1, keepdims=True)
                p = np.exp(logits)
                p /= p.sum(axis=1, keepdims=True)
                losses.append(-np.log(p[np.arange(len(yb)), yb] + 1e-9).mean())
                p[np.arange(len(yb)), yb] -= 1.0
                p /= len(yb)
                grad_h = (p @ w2.T) * (h > 0)
                w2 -= lr * (h.T @ p)
                w1 -= lr * (xb.T @ grad_h)
            accuracy = float((np.argmax(np.maximum(x @ w1, 0) @ w2, axis=1) == y).mean())
        m.log(epoch=epoch, loss=float(np.mean(losses)), accuracy=accuracy)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--hidden", type=int, default=768)
    args = parser.parse_args()
    # Named apart from the CLI's run of this script ("train_mlp"); under `energymeter run` the
    # report links to it through parent_run_id.
    with measure("train_mlp-loop") as m:
        acc = train(m, args.epochs, args.samples, args.hidden)
    print(f"final accuracy {acc:.3f}")
    print(m.report.summary())


if __name__ == "__main__":
    main()
