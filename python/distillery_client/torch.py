"""A PyTorch view of the teacher's transfer set (needs torch).

    from distillery_client.torch import TransferSetDataset
    data = TransferSetDataset(teacher, batch_size=128, temperature=20)
    for epoch in range(epochs):
        data.set_epoch(epoch)
        for inputs, targets, labels, ids in torch.utils.data.DataLoader(data, batch_size=None):
            ...

Each item is already a batch (use batch_size=None in DataLoader, and
num_workers=0: the gRPC channel stays in this process).
"""

from typing import Iterator, Optional, Tuple

import torch
from torch.utils.data import IterableDataset

from .client import TeacherClient


class TransferSetDataset(IterableDataset):
    """One shard of the teacher's transfer set, epoch by epoch, as tensors.

    Yields (inputs, targets, labels, example_ids): inputs float32 pixels / 255
    of shape (n, C, H, W) (or (n, C*H*W) with flatten=True), targets float32
    (n, num_classes) probabilities at T, labels int64 (n,) or None, ids int64.
    """

    def __init__(self, client: TeacherClient, *, seed: int = 1, shard_index: int = 0,
                 num_shards: int = 1, batch_size: int = 128,
                 temperature: Optional[float] = None, include_labels: bool = False,
                 flatten: bool = False, top_k: int = 0, dtype: str = "float32"):
        super().__init__()
        self.client = client
        self.seed, self.shard_index, self.num_shards = seed, shard_index, num_shards
        self.batch_size, self.temperature = batch_size, temperature
        self.include_labels, self.flatten = include_labels, flatten
        self.top_k, self.dtype = top_k, dtype
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration streams (it fixes the order)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.client.num_batches(self.shard_index, self.num_shards, self.batch_size)

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor],
                                         torch.Tensor]]:
        for batch in self.client.transfer_set(
                self.epoch, self.seed, self.shard_index, self.num_shards, self.batch_size,
                self.temperature, top_k=self.top_k, dtype=self.dtype,
                include_labels=self.include_labels):
            inputs = torch.from_numpy(batch.pixels.astype("float32")).div_(255.0)
            if self.flatten:
                inputs = inputs.reshape(inputs.shape[0], -1)
            labels = (torch.from_numpy(batch.labels.astype("int64"))
                      if batch.labels is not None else None)
            yield (inputs, torch.from_numpy(batch.targets),
                   labels, torch.from_numpy(batch.example_ids.astype("int64")))
