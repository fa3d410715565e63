"""A site trainer without torch for the federation tests: logistic regression by
gradient descent in numpy on two Gaussian classes, so the client processes start fast.
Module level, so a federation job pickles the factory by name (this folder is on the
clients' import path: the launcher passes its own)."""

from __future__ import annotations

import time

import numpy as np


def gaussian_data(n: int, seed: int, shift: float = 2.0, dims: int = 5) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, dims)) + shift * (y[:, None] - 0.5)
    return x, y


def accuracy(weights: list[np.ndarray], x: np.ndarray, y: np.ndarray) -> float:
    w, b = weights
    return float((((x @ w + b) > 0).astype(int) == y).mean())


class ToySite:
    def __init__(self, seed: int, n: int = 200, lr: float = 0.5, sleep: float = 0.0, wrong_shape: bool = False):
        self.x, self.y = gaussian_data(n, seed)
        self.vx, self.vy = gaussian_data(100, seed + 1000)
        self.w, self.b = np.zeros(self.x.shape[1]), np.zeros(1)
        self.lr, self.sleep, self.wrong_shape = lr, sleep, wrong_shape

    def get_weights(self):
        return [np.zeros(3), self.b.copy()] if self.wrong_shape else [self.w.copy(), self.b.copy()]

    def set_weights(self, weights):
        self.w, self.b = np.asarray(weights[0], float).copy(), np.asarray(weights[1], float).copy()

    def fit(self, epochs, *, proximal_mu=0.0, round_=0):
        w0 = self.w.copy()
        for _ in range(epochs):
            time.sleep(self.sleep)
            p = 1 / (1 + np.exp(-(self.x @ self.w + self.b)))
            self.w -= self.lr * (self.x.T @ (p - self.y) / len(self.y) + proximal_mu * (self.w - w0))
            self.b -= self.lr * np.mean(p - self.y, keepdims=True)
        loss = -np.mean(self.y * np.log(p + 1e-9) + (1 - self.y) * np.log(1 - p + 1e-9))
        return {"n": len(self.y), "train_loss": float(loss)}

    def evaluate(self):
        return {"n": len(self.vy), "loss": 0.0, "accuracy": accuracy([self.w, self.b], self.vx, self.vy)}


def toy_site(**kwargs) -> ToySite:
    return ToySite(**kwargs)


if __name__ == "__main__":  # a stand-in process for the launcher's tests: sleep, then exit with a code
    import sys

    time.sleep(float(sys.argv[1]))
    sys.exit(int(sys.argv[2]))
