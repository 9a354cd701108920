#!/usr/bin/python3
"""PyTorch peer benchmark for Distillery's MLP training on MNIST.

Trains the same MLPs "the same way" as the C++ engine (Linear+ReLU stacks,
optional input/hidden dropout, SGD with momentum, max-norm on the hidden
layers' incoming weight rows, mean cross-entropy, shuffled every epoch) and
reports training throughput in examples per second.

Run it with Debian's interpreter and Debian's python3-torch, e.g.:

    /usr/bin/python3 bench/torch_peer.py --epochs 1

Output: one machine-readable line per architecture,

    torch_peer arch=784-1200-1200-10 batch=128 examples_per_s=12345.6 threads=2 blas=openblas final_loss=0.1234

or, with --json, a single JSON document on stdout (info lines go to stderr).
"""

import argparse
import gzip
import json
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn

SCRIPT_DIR = os.path.dirname(os.path.abspath(__file__))
DEFAULT_MNIST_DIR = os.path.normpath(os.path.join(SCRIPT_DIR, "..", "..", "shared", "data", "mnist"))


# --------------------------------------------------------------------------- data

def _open_maybe_gz(path):
    if os.path.exists(path):
        return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    if path.endswith(".gz") and os.path.exists(path[:-3]):
        return open(path[:-3], "rb")
    raise FileNotFoundError(path)


def read_idx(path):
    """Read an IDX file (optionally gzip-compressed) into a numpy array."""
    with _open_maybe_gz(path) as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError("%s: unsupported IDX header (dtype 0x%02x)" % (path, dtype_code))
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    arr = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    expected = int(np.prod(dims))
    if arr.size != expected:
        raise ValueError("%s: expected %d bytes of payload, got %d" % (path, expected, arr.size))
    return arr.reshape(dims)


def load_mnist_train(mnist_dir):
    images = read_idx(os.path.join(mnist_dir, "train-images-idx3-ubyte.gz"))
    labels = read_idx(os.path.join(mnist_dir, "train-labels-idx1-ubyte.gz"))
    x = images.reshape(images.shape[0], -1).astype(np.float32) / np.float32(255.0)
    y = labels.astype(np.int64)
    if x.shape[0] != y.shape[0]:
        raise ValueError("image/label count mismatch: %d vs %d" % (x.shape[0], y.shape[0]))
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(y)


# --------------------------------------------------------------------------- BLAS detection

def detect_blas():
    """Return (short_name, library_path) of the BLAS actually mapped into this process.

    Debian's torch links against libblas.so.3, which the alternatives system
    resolves to the reference BLAS, OpenBLAS, BLIS, ... so look at what is mapped.
    """
    paths = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[-1].startswith("/"):
                    p = parts[-1]
                    base = os.path.basename(p).lower()
                    if ("blas" in base or "blis" in base or "mkl_" in base) and p not in paths:
                        paths.append(p)
    except OSError:
        pass
    joined = " ".join(paths).lower()
    if "openblas" in joined:
        name = "openblas"
    elif "blis" in joined:
        name = "blis"
    elif "mkl" in joined:
        name = "mkl"
    elif "atlas" in joined:
        name = "atlas"
    elif "/blas/libblas.so" in joined:
        name = "reference"
    elif paths:
        name = "unknown"
    else:
        # Fall back to the build config (e.g. a statically linked MKL build).
        cfg = torch.__config__.show()
        name = "mkl" if "BLAS_INFO=mkl" in cfg else "unknown"
    lib = next((p for p in paths if "openblas" in p.lower()), paths[0] if paths else "")
    return name, lib


# --------------------------------------------------------------------------- model

def parse_arch(s):
    dims = [int(t) for t in s.strip().split("-") if t]
    if len(dims) < 2:
        raise ValueError("bad arch %r" % s)
    return dims


def build_mlp(dims, p_in, p_hidden):
    layers = []
    if p_in > 0:
        layers.append(nn.Dropout(p_in))
    hidden_linears = []
    n = len(dims) - 1
    for i in range(n):
        lin = nn.Linear(dims[i], dims[i + 1])
        layers.append(lin)
        if i < n - 1:
            hidden_linears.append(lin)
            layers.append(nn.ReLU())
            if p_hidden > 0:
                layers.append(nn.Dropout(p_hidden))
    return nn.Sequential(*layers), hidden_linears


@torch.no_grad()
def apply_max_norm(linears, max_norm):
    # Clamp the L2 norm of each hidden unit's incoming weight vector (a row of
    # the (out, in) weight matrix) to max_norm; rows below the limit are untouched.
    for lin in linears:
        w = lin.weight
        w.copy_(torch.renorm(w, p=2, dim=0, maxnorm=max_norm))


# --------------------------------------------------------------------------- training

def run_arch(arch_str, x, y, args, blas_name):
    dims = parse_arch(arch_str)
    if dims[0] != x.shape[1]:
        raise ValueError("arch %s: input width %d != data width %d" % (arch_str, dims[0], x.shape[1]))
    torch.manual_seed(args.seed)
    model, hidden_linears = build_mlp(dims, args.p_in, args.p_hidden)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=args.momentum)
    loss_fn = nn.CrossEntropyLoss()  # mean over the batch
    n = x.shape[0]
    bs = args.batch
    use_max_norm = args.max_norm is not None and args.max_norm > 0

    def step(idx):
        xb = x.index_select(0, idx)
        yb = y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.autocast):
            loss = loss_fn(model(xb), yb)
        loss.backward()
        opt.step()
        if use_max_norm:
            apply_max_norm(hidden_linears, args.max_norm)
        return loss.detach()

    # Untimed warm-up (allocator, OpenMP/BLAS thread pools, oneDNN/BLAS kernel selection).
    perm = torch.randperm(n)
    for b in range(args.warmup_batches):
        s = (b * bs) % n
        step(perm[s:s + bs])

    total_examples = 0
    total_time = 0.0
    epoch_losses = []
    for _ in range(args.epochs):
        perm = torch.randperm(n)  # reshuffle every epoch (included in timing)
        loss_sum = torch.zeros((), dtype=torch.float64)
        t0 = time.perf_counter()
        for s in range(0, n, bs):
            idx = perm[s:s + bs]
            loss = step(idx)
            loss_sum += loss.double() * idx.numel()
        t1 = time.perf_counter()
        total_time += t1 - t0
        total_examples += n
        epoch_losses.append(float(loss_sum) / n)

    return {
        "arch": arch_str,
        "batch": bs,
        "epochs": args.epochs,
        "examples": total_examples,
        "seconds": total_time,
        "examples_per_s": total_examples / total_time if total_time > 0 else float("nan"),
        "threads": torch.get_num_threads(),
        "blas": blas_name,
        "final_loss": epoch_losses[-1] if epoch_losses else float("nan"),
        "last_batch_loss": float(loss),
        "epoch_losses": epoch_losses,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description="PyTorch peer benchmark: MLP training throughput on MNIST.")
    ap.add_argument("--mnist-dir", default=DEFAULT_MNIST_DIR,
                    help="directory with train-images-idx3-ubyte.gz / train-labels-idx1-ubyte.gz (default: %(default)s)")
    ap.add_argument("--archs", default="784-1200-1200-10,784-800-800-10",
                    help="comma-separated layer widths, e.g. 784-1200-1200-10 (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=1, help="timed epochs over the whole training set (default: %(default)s)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup-batches", type=int, default=20, help="untimed batches before timing (default: %(default)s)")
    ap.add_argument("--dropout", default="0.2,0.5",
                    help="'P_INPUT,P_HIDDEN' dropout rates; '0,0' disables (default: %(default)s)")
    ap.add_argument("--max-norm", type=float, default=3.5,
                    help="max L2 norm of hidden units' incoming weight rows, applied after every step; 0 disables (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--autocast", action="store_true",
                    help="bf16 autocast in the forward pass (PyTorch's mixed precision on CPUs with bf16)")
    ap.add_argument("--json", action="store_true", help="print results as JSON on stdout")
    args = ap.parse_args(argv)

    parts = [p for p in args.dropout.split(",") if p.strip() != ""]
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2:
        ap.error("--dropout expects 'P_INPUT,P_HIDDEN'")
    args.p_in, args.p_hidden = float(parts[0]), float(parts[1])
    if args.batch <= 0 or args.epochs <= 0 or args.threads <= 0 or args.warmup_batches < 0:
        ap.error("--batch/--epochs/--threads must be positive, --warmup-batches >= 0")

    torch.set_num_threads(args.threads)
    blas_name, blas_lib = detect_blas()
    info = sys.stderr if args.json else sys.stdout

    print("# torch_peer: python=%s torch=%s numpy=%s threads=%d blas=%s (%s) OPENBLAS_CORETYPE=%s"
          % (sys.executable, torch.__version__, np.__version__, torch.get_num_threads(), blas_name,
             blas_lib or "n/a", os.environ.get("OPENBLAS_CORETYPE", "<unset>")), file=info)
    print("# torch_peer: dropout=%g,%g max_norm=%s lr=%g momentum=%g batch=%d epochs=%d warmup_batches=%d mnist=%s"
          % (args.p_in, args.p_hidden, args.max_norm, args.lr, args.momentum, args.batch, args.epochs,
             args.warmup_batches, args.mnist_dir), file=info)
    info.flush()

    x, y = load_mnist_train(args.mnist_dir)

    results = []
    for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
        r = run_arch(arch, x, y, args, blas_name)
        results.append(r)
        if not args.json:
            print("torch_peer arch=%s batch=%d examples_per_s=%.1f threads=%d blas=%s autocast=%d "
                  "final_loss=%.4f" % (r["arch"], r["batch"], r["examples_per_s"], r["threads"],
                                       r["blas"], int(args.autocast), r["final_loss"]))
            sys.stdout.flush()

    if args.json:
        doc = {
            "peer": "pytorch",
            "torch_version": torch.__version__,
            "python": sys.executable,
            "threads": torch.get_num_threads(),
            "blas": blas_name,
            "blas_library": blas_lib,
            "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE"),
            "dropout": [args.p_in, args.p_hidden],
            "max_norm": args.max_norm,
            "lr": args.lr,
            "momentum": args.momentum,
            "warmup_batches": args.warmup_batches,
            "mnist_dir": args.mnist_dir,
            "results": results,
        }
        json.dump(doc, sys.stdout, indent=2)
        sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
