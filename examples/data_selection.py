"""Data selection: train a small numpy MLP on all the data, on the 30 % an EL2N score keeps, or
on a random 30 %, inside ``energymeter.measure()`` with a ``selection`` and a ``train`` phase.

    python examples/data_selection.py --select el2n --keep 0.3
    energymeter sweep --grid select=full,el2n,random --repeat 3 --warmup 1 -- \\
        python examples/data_selection.py --select {select} --keep 0.3

EL2N (Paul et al., 2021) scores each training example by the norm of its error vector
(softmax output minus the one-hot label) after a few epochs of training, and keeps the
hardest ones; scoring costs compute of its own, which the ``selection`` phase measures, so that
``energymeter compare --phase selection`` and the whole-run figures say whether the saving in
training pays for the selection. ``m.log`` stamps ``val_acc`` with the energy used so far
(energy to a target accuracy), ``m.count`` counts the examples trained on.
"""

from __future__ import annotations

import argparse

import numpy as np

from energymeter import Meter, measure


def make_data(rng: np.random.Generator, n: int, dim: int = 64, classes: int = 10
              ) -> tuple[np.ndarray, np.ndarray]:
    centers = rng.normal(size=(classes, dim)) * 0.4
    y = rng.integers(0, classes, size=n)
    x = centers[y] + rng.normal(size=(n, dim))
    return x.astype(np.float32), y


class MLP:
    def __init__(self, rng: np.random.Generator, dim: int, hidden: int, classes: int) -> None:
        self.w1 = (rng.normal(size=(dim, hidden)) / np.sqrt(dim)).astype(np.float32)
        self.w2 = (rng.normal(size=(hidden, classes)) / np.sqrt(hidden)).astype(np.float32)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h = np.maximum(x @ self.w1, 0.0)
        logits = h @ self.w2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        return h, p / p.sum(axis=1, keepdims=True)

    def step(self, x: np.ndarray, y: np.ndarray, lr: float) -> None:
        h, p = self.forward(x)
        p[np.arange(len(y)), y] -= 1.0
        g2 = h.T @ p / len(y)
        gh = (p @ self.w2.T) * (h > 0)
        self.w2 -= lr * g2
        self.w1 -= lr * (x.T @ gh / len(y))

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.forward(x)[1].argmax(axis=1) == y).mean())


def epochs_over(model: MLP, x: np.ndarray, y: np.ndarray, epochs: int,
                rng: np.random.Generator, batch: int = 256, lr: float = 0.05) -> None:
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for i in range(0, len(y), batch):
            idx = order[i:i + batch]
            model.step(x[idx], y[idx], lr)


def el2n_scores(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, hidden: int,
                epochs: int) -> np.ndarray:
    """The L2 norm of each example's error vector after ``epochs`` of training."""
    probe = MLP(rng, x.shape[1], hidden, int(y.max()) + 1)
    epochs_over(probe, x, y, epochs, rng)
    _, p = probe.forward(x)
    p[np.arange(len(y)), y] -= 1.0
    return np.linalg.norm(p, axis=1)


def run(m: Meter, select: str, keep: float, epochs: int, n: int, hidden: int,
        seed: int) -> float:
    rng = np.random.default_rng(seed)
    x, y = make_data(rng, n + n // 5)
    x, y, x_val, y_val = x[:n], y[:n], x[n:], y[n:]
    with m.phase("selection"):
        if select == "el2n":
            kept = np.argsort(el2n_scores(x, y, rng, hidden, epochs=2))[-int(keep * n):]
        elif select == "random":
            kept = rng.permutation(n)[:int(keep * n)]
        else:
            kept = np.arange(n)
    x, y = x[kept], y[kept]
    model = MLP(rng, x.shape[1], hidden, 10)
    accuracy = 0.0
    with m.phase("train"):
        for epoch in range(1, epochs + 1):
            epochs_over(model, x, y, 1, rng)
            m.count(len(y))
            accuracy = model.accuracy(x_val, y_val)
            m.log(epoch=epoch, val_acc=accuracy)
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--select", choices=("full", "el2n", "random"), default="full")
    parser.add_argument("--keep", type=float, default=0.3, help="fraction kept (el2n, random)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--samples", type=int, default=8_000)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with measure(f"select-{args.select}", tags={"select": args.select}) as m:
        accuracy = run(m, args.select, args.keep, args.epochs, args.samples, args.hidden,
                       args.seed)
    m.set(final_acc=accuracy)
    print(f"{args.select}: val_acc {accuracy:.3f}")


if __name__ == "__main__":
    main()
