#!/usr/bin/python3
"""A PyTorch student distilled from a running teacher_server.

The student pulls its shard of the teacher's transfer set (images, soft
targets at T and, with alpha < 1, labels) through distillery_client and
minimises

    alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE(labels, student)

(Hinton et al. 2015), printing its errors on the MNIST test set after every
epoch. alpha=0 is the baseline trained on the same images' labels alone.

    examples/pytorch_student.py --teacher=127.0.0.1:50051 \
        --mnist_dir=/work/shared/data/mnist [--architecture=784-800-800-10] \
        [--epochs=10] [--alpha=0.9] [--temperature=20] [--threads=2]

Needs the package (pip install ./python, see README.md) and PyTorch; the
teacher must serve labels (--serve_labels) unless --alpha=1.
"""

import argparse
import gzip
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from distillery_client import TeacherClient
from distillery_client.torch import TransferSetDataset


def read_mnist_test(directory: str, count: int):
    def opened(stem):
        path = os.path.join(directory, stem)
        return open(path, "rb") if os.path.exists(path) else gzip.open(path + ".gz", "rb")
    with opened("t10k-images-idx3-ubyte") as f:
        header = f.read(16)
        n, rows, cols = (int.from_bytes(header[i:i + 4], "big") for i in (4, 8, 12))
        count = min(count, n)
        images = np.frombuffer(f.read(count * rows * cols), np.uint8).reshape(count, rows * cols)
    with opened("t10k-labels-idx1-ubyte") as f:
        labels = np.frombuffer(f.read()[8:8 + count], np.uint8)
    return torch.from_numpy(images.astype(np.float32) / 255.0), torch.from_numpy(
        labels.astype(np.int64))


def make_student(architecture: str) -> torch.nn.Module:
    units = [int(u) for u in architecture.split("-")]
    layers = []
    for i, (fan_in, fan_out) in enumerate(zip(units, units[1:])):
        layers.append(torch.nn.Linear(fan_in, fan_out))
        if i < len(units) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--teacher", default="127.0.0.1:50051",
                        help="replicas host:port,host:port or dns:///name:port")
    parser.add_argument("--mnist_dir", default="/work/shared/data/mnist",
                        help="directory with t10k-images-idx3-ubyte[.gz] (test errors)")
    parser.add_argument("--test_examples", type=int, default=10000)
    parser.add_argument("--architecture", default="784-800-800-10")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--alpha", type=float, default=0.9,
                        help="weight of the soft-target term (0: labels only)")
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2,
                        help="torch.set_num_threads (set it: the teacher shares the cores)")
    parser.add_argument("--tls_ca_file")
    parser.add_argument("--tls_cert_file")
    parser.add_argument("--tls_key_file")
    parser.add_argument("--auth_token_file",
                        help="bearer token file (else $DISTILLERY_AUTH_TOKEN)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    test_x, test_y = read_mnist_test(args.mnist_dir, args.test_examples)
    client = TeacherClient(args.teacher, tls_ca_file=args.tls_ca_file,
                           tls_cert_file=args.tls_cert_file, tls_key_file=args.tls_key_file,
                           auth_token_file=args.auth_token_file)
    info = client.info
    print(f"teacher {info.architecture} ({info.teacher_hash}), transfer set of "
          f"{info.transfer_set_size} examples; student {args.architecture}, alpha {args.alpha}, "
          f"T {args.temperature}", flush=True)
    data = TransferSetDataset(client, seed=args.seed, batch_size=args.batch_size,
                              temperature=args.temperature, include_labels=args.alpha < 1,
                              flatten=True)
    student = make_student(args.architecture)
    optimizer = torch.optim.SGD(student.parameters(), lr=args.lr, momentum=args.momentum)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.epochs * len(data))
    t = args.temperature
    errors = None
    for epoch in range(args.epochs):
        data.set_epoch(epoch)
        student.train()
        start, seen = time.monotonic(), 0
        for inputs, targets, labels, _ in data:
            logits = student(inputs)
            loss = torch.zeros(())
            if args.alpha > 0:
                kl = F.kl_div(F.log_softmax(logits / t, dim=1), targets, reduction="batchmean")
                loss = loss + args.alpha * t * t * kl
            if args.alpha < 1:
                loss = loss + (1 - args.alpha) * F.cross_entropy(logits, labels)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
            seen += len(inputs)
        student.eval()
        with torch.no_grad():
            errors = int((student(test_x).argmax(dim=1) != test_y).sum())
        print(f"epoch {epoch + 1} test_errors {errors} of {len(test_y)} "
              f"({100.0 * errors / len(test_y):.2f}%) {seen / (time.monotonic() - start):.0f} "
              "examples/s", flush=True)
    print(f"final test_errors {errors} of {len(test_y)}")
    client.close()


if __name__ == "__main__":
    main()
