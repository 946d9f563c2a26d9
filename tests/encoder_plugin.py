"""A test-only dataset that declares an encoder (raw 2x4x4 'images' -> 2 channel means)."""
import numpy as np

from valbench import hookimpl
from valbench.seeding import rng
from valbench.types import Split, Splits

CALLS = []


class ChannelMeans:
    key = "channel-means-v1"

    def encode(self, x, device="cpu"):
        CALLS.append(len(x))
        return x.reshape(len(x), 2, -1).mean(axis=2).astype(np.float32)


class TinyImages:
    name = "tiny-images"
    version = "1"

    def __init__(self, *, n: int = 40):
        self.n = n

    def fingerprint(self):
        return "tiny"

    def load(self, seed):
        g = rng(seed, "tiny")
        y = np.arange(3 * self.n) % 2
        x = (g.uniform(size=(3 * self.n, 2, 4, 4)) + y[:, None, None, None]).astype(np.float32)
        s = [Split(x[i::3], y[i::3].astype(np.int64)) for i in range(3)]
        return Splits(*s, n_classes=2, encoder=ChannelMeans())


@hookimpl
def register_datasets(register):
    register(TinyImages)
