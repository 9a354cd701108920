#!/usr/bin/python3
"""PyTorch peer for Distillery's soft-target serving (bench/serving_bench.cc).

Times the teacher's inference the way a user serving it with PyTorch would:
forward pass of a Linear+ReLU stack and softmax(z/T), in-process, at one
batch size, in f32, in f32 under bf16 autocast, and as a bf16 model (weights
and activations bf16, softmax in f32). The weights are random: the speed
does not depend on them.

Run it with Debian's interpreter and Debian's python3-torch:

    OMP_NUM_THREADS=2 /usr/bin/python3 bench/torch_serving_peer.py --threads 2

Output: one line per mode,

    torch_serving arch=784-1200-1200-10 batch=1024 mode=bf16_model examples_per_s=123456 threads=2
"""

import argparse
import time

import torch


def build(arch):
    sizes = [int(s) for s in arch.split("-")]
    layers = []
    for i in range(len(sizes) - 1):
        layers.append(torch.nn.Linear(sizes[i], sizes[i + 1]))
        if i + 2 < len(sizes):
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).eval(), sizes[0]


def rate(step, batch, seconds):
    """Examples per second of step(), after a warm-up, over `seconds`."""
    for _ in range(5):
        step()
    done, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        done += batch
    return done / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--arch", default="784-1200-1200-10")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--temperature", type=float, default=20.0)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, inputs = build(args.arch)
    x = torch.rand(args.batch, inputs)
    t = args.temperature

    def f32():
        with torch.inference_mode():
            torch.softmax(model(x) / t, dim=1)

    def autocast():
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.softmax(model(x).float() / t, dim=1)

    bf16_model = build(args.arch)[0].to(torch.bfloat16)
    xb = x.to(torch.bfloat16)

    def bf16():
        with torch.inference_mode():
            torch.softmax(bf16_model(xb).float() / t, dim=1)

    for mode, step in (("f32", f32), ("bf16_autocast", autocast), ("bf16_model", bf16)):
        r = rate(step, args.batch, args.seconds)
        print(f"torch_serving arch={args.arch} batch={args.batch} mode={mode} "
              f"examples_per_s={r:.0f} threads={args.threads}", flush=True)


if __name__ == "__main__":
    main()
