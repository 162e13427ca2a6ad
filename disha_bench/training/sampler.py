"""The data order of a run: seeded, epoch after epoch, the same global batches for any rank count.

    python -c "from disha_bench.training.sampler import GlobalBatches as G; print(G(10, 2, 1, 0, 0).next())"
"""

from __future__ import annotations

import random


class GlobalBatches:
    """Seeded order over the training set; every micro-step takes the next global micro-batch and
    this rank keeps its slice. One rank with batch 4 and two ranks with batch 2 see the same data."""

    def __init__(self, size: int, batch_size: int, world: int, rank: int, seed: int):
        self.size, self.batch_size, self.world, self.rank, self.seed = size, batch_size, world, rank, seed
        self.epoch, self.order, self.position = 0, self._shuffle(0), 0

    def _shuffle(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(self.seed * 100_003 + epoch).shuffle(order)
        return order

    def next(self) -> list[int]:
        take = self.batch_size * self.world
        picked: list[int] = []
        while len(picked) < take:
            if self.position == self.size:
                self.epoch += 1
                self.order, self.position = self._shuffle(self.epoch), 0
            count = min(take - len(picked), self.size - self.position)
            picked += self.order[self.position : self.position + count]
            self.position += count
        return picked[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]

    def state_dict(self) -> dict[str, int]:
        """Where the order stands: enough to continue it exactly (the order itself is re-derived)."""
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.epoch, self.position = state["epoch"], state["position"]
        self.order = self._shuffle(self.epoch)
