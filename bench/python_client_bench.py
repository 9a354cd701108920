#!/usr/bin/python3
"""Iterating the transfer set in Python (distillery_client, no training)
against the C++ client's stream (bench/client_tool), from the same teacher,
same shard, batch size and temperature, in alternating rounds (the machine
is shared: alternation spreads other load over both sides).

    bench/python_client_bench.py --teacher_server=build/teacher_server/teacher_server \
        --client_tool=build/bench/client_tool --mnist_dir=/work/shared/data/mnist \
        [--rounds=7] [--batch_size=128] [--dtype=float32] [--top_k=0]

Both sides time the stream alone (after connecting) and decode every batch
into full probability rows (C++: DecodeTargets; Python: NumPy arrays of
pixels, targets and ids). Prints each round and the medians; the Python
client must be run with the package installed (see README.md).
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from distillery_client import TeacherClient


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher_server", default="build/teacher_server/teacher_server")
    parser.add_argument("--client_tool", default="build/bench/client_tool")
    parser.add_argument("--mnist_dir", default="/work/shared/data/mnist")
    parser.add_argument("--checkpoint", help="teacher checkpoint (default: train 784-64-10)")
    parser.add_argument("--transfer_range", default="0:60000")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--temperature", type=float, default=20.0)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16"])
    parser.add_argument("--top_k", type=int, default=0)
    parser.add_argument("--server_threads", type=int, default=1)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="python_client_bench.") as tmp:
        checkpoint = args.checkpoint
        if checkpoint is None:
            checkpoint = os.path.join(tmp, "teacher.ckpt")
            subprocess.run([args.teacher_server, "train", f"--data_dir={args.mnist_dir}",
                            "--architecture=784-64-10", "--train_range=0:2000", "--epochs=1",
                            "--threads=1", f"--checkpoint={checkpoint}"], check=True,
                           capture_output=True)
        port_file = os.path.join(tmp, "port")
        server = subprocess.Popen(
            [args.teacher_server, "serve", f"--checkpoint={checkpoint}",
             f"--data_dir={args.mnist_dir}", f"--transfer_range={args.transfer_range}",
             "--address=127.0.0.1:0", f"--port_file={port_file}", "--metrics_address=",
             f"--threads={args.server_threads}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 60
            while not os.path.exists(port_file) or not open(port_file).read().strip():
                if server.poll() is not None or time.monotonic() > deadline:
                    sys.exit("teacher_server did not start")
                time.sleep(0.05)
            target = "127.0.0.1:" + open(port_file).read().strip()
            client = TeacherClient(target)
            cpp, py = [], []
            for r in range(args.rounds):
                out = subprocess.run(
                    [args.client_tool, f"--teacher={target}", "--mode=stream",
                     f"--batch_size={args.batch_size}", f"--temperature={args.temperature}",
                     f"--top_k={args.top_k}", f"--epoch={r}",
                     "--dtype=" + ("f16" if args.dtype == "float16" else "f32")],
                    check=True, capture_output=True, text=True).stdout
                cpp.append(float(out.split("examples_per_s")[1].split()[0]))
                start, n = time.perf_counter(), 0
                for batch in client.transfer_set(r, batch_size=args.batch_size,
                                                 temperature=args.temperature, top_k=args.top_k,
                                                 dtype=args.dtype):
                    n += len(batch.example_ids)
                py.append(n / (time.perf_counter() - start))
                print(f"round {r}: C++ {cpp[-1]:.0f} examples/s, Python {py[-1]:.0f} examples/s "
                      f"({py[-1] / cpp[-1]:.2f}x)", flush=True)
            client.close()
        finally:
            server.terminate()
            server.wait()
    c, p = statistics.median(cpp), statistics.median(py)
    # Each round's pair ran back to back: the median of their ratios is the
    # figure least moved by other load on a shared machine.
    paired = statistics.median(b / a for a, b in zip(cpp, py))
    print(f"median: C++ {c:.0f} examples/s, Python {p:.0f} examples/s, Python/C++ {p / c:.2f}; "
          f"median of per-round ratios {paired:.2f} (batch {args.batch_size}, {args.dtype}, "
          f"top_k {args.top_k}, {args.rounds} rounds)")


if __name__ == "__main__":
    main()
