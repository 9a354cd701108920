#!/usr/bin/python3
"""PyTorch peer for Distillery's convolutional training on MNIST.

Trains the network of bench/run_cnn_bench.sh the same way as
`teacher_server train` does (conv5x5:32/same+bn, maxpool2, conv5x5:64/same+bn,
maxpool2, fc:512, dropout 0.5, fc:10; SGD momentum 0.9, weight decay 5e-4 on
the weights, batch 128, mean cross-entropy, shuffled every epoch) and prints
one line:

    torch_cnn_peer batch=128 examples_per_s=1234.5 threads=2 channels_last=0 autocast=0 final_loss=0.12

With --autocast the forward pass runs under torch.autocast("cpu", bfloat16)
(bf16 convolutions and linear layers, f32 weights and optimizer), PyTorch's
mixed precision on CPUs with native bf16.

Run with Debian's interpreter (python3-torch): /usr/bin/python3 bench/torch_cnn_peer.py
"""

import argparse
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from torch_peer import DEFAULT_MNIST_DIR, load_mnist_train  # noqa: E402


def network():
    return nn.Sequential(
        nn.Conv2d(1, 32, 5, padding=2), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2), nn.BatchNorm2d(64), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 7 * 7, 512), nn.ReLU(), nn.Dropout(0.5), nn.Linear(512, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--examples", type=int, default=60000,
                        help="training examples in the timed epoch")
    parser.add_argument("--channels-last", action="store_true",
                        help="run in torch.channels_last memory format")
    parser.add_argument("--autocast", action="store_true",
                        help="bf16 autocast in the forward pass")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(1)
    x, y = load_mnist_train(args.mnist_dir)
    x, y = x[:args.examples].reshape(-1, 1, 28, 28), y[:args.examples]
    model = network()
    memory_format = torch.channels_last if args.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    decay = [p for n, p in model.named_parameters() if p.dim() > 1]
    other = [p for n, p in model.named_parameters() if p.dim() <= 1]
    optimizer = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4},
                                 {"params": other, "weight_decay": 0.0}], lr=0.05, momentum=0.9)
    loss_fn = nn.CrossEntropyLoss()
    model.train()

    def step_loss(xb, yb):
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
            return loss_fn(model(xb), yb)

    # A short warm-up, untimed (oneDNN's kernels are generated on first use).
    for start in range(0, 4 * args.batch, args.batch):
        xb = x[start:start + args.batch].contiguous(memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        step_loss(xb, y[start:start + args.batch]).backward()
        optimizer.step()
    order = torch.randperm(x.shape[0])
    begin = time.perf_counter()
    loss = None
    for start in range(0, x.shape[0], args.batch):
        idx = order[start:start + args.batch]
        xb = x[idx].contiguous(memory_format=memory_format)
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss(xb, y[idx])
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - begin
    print("torch_cnn_peer batch=%d examples_per_s=%.1f threads=%d channels_last=%d autocast=%d "
          "final_loss=%.4f" % (args.batch, x.shape[0] / seconds, args.threads,
                               int(args.channels_last), int(args.autocast), float(loss)))


if __name__ == "__main__":
    np.seterr(all="raise")
    main()
