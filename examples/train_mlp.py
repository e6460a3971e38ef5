"""Train a small numpy MLP for about ten seconds inside ``energymeter.measure()``.

    python examples/train_mlp.py             # measured in-process
    energymeter run -- python examples/train_mlp.py   # or wrapped by the CLI
    python examples/train_mlp.py --prune 0.5          # a pruned variant: half the hidden units

Each epoch is a phase; ``m.log`` stamps loss and validation accuracy (``val_acc``) with the
energy used so far, so energy-to-accuracy can be read from the report (``energymeter report
--target val_acc=0.9``, ``report.to_dataframe("logs")``); ``m.count`` counts the training
samples (energy per sample) and ``m.set`` records the final accuracy. ``--prune F`` removes a
fraction F of the hidden units (structured pruning: less compute, so less energy). Under
``energymeter run`` the script's own report (with phases) is written beside the CLI's report of
the whole process, with the CLI's tags. The ``ENERGYMETER_*`` variables apply.
"""

from __future__ import annotations

import argparse

import numpy as np

from energymeter import Meter, measure


def make_data(rng: np.random.Generator, n: int, dim: int, classes: int):
    centers = rng.normal(size=(classes, dim)) * 0.4
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(size=(n, dim))
    return x.astype(np.float32), y


def train(m: Meter, epochs: int, n: int, hidden: int, seed: int = 0) -> float:
    rng = np.random.default_rng(seed)
    dim, classes, batch, lr = 64, 10, 256, 0.01
    x, y = make_data(rng, n + n // 5, dim, classes)
    x, y, x_val, y_val = x[:n], y[:n], x[n:], y[n:]
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
                m.count(len(idx))  # training samples: the report gives J per sample
            accuracy = float((np.argmax(np.maximum(x_val @ w1, 0) @ w2, axis=1)
                              == y_val).mean())
        m.log(epoch=epoch, loss=float(np.mean(losses)), val_acc=accuracy)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--samples", type=int, default=60_000)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--prune", type=float, default=0.0, metavar="F",
                        help="fraction of hidden units removed (structured pruning)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not 0.0 <= args.prune < 1.0:
        parser.error("--prune is a fraction in [0, 1)")
    hidden = max(1, round(args.hidden * (1.0 - args.prune)))
    # Named apart from the CLI's run of this script ("train_mlp"); under `energymeter run` the
    # report links to it through parent_run_id and carries the CLI's tags.
    with measure("train_mlp-loop", tags={"hidden": hidden}) as m:
        acc = train(m, args.epochs, args.samples, hidden, seed=args.seed)
        m.set(final_val_acc=acc)
    print(f"final validation accuracy {acc:.3f}")
    print(m.report.summary())


if __name__ == "__main__":
    main()
