#!/usr/bin/env python3
"""End-to-end test of `teacher_server import` (bring your own teacher).

At test time, PyTorch (Debian's python3-torch, importable only by
/usr/bin/python3) trains two small MNIST classifiers on inputs normalised as
torchvision's Normalize((0.1307,), (0.3081,)) does, (pixels / 255 - 0.1307) /
0.3081, and exports them with torch.onnx.export (opset 13, dynamic batch
axis):

  * a CNN: conv-bn-relu-pool-conv-bn-relu-pool-pool(ceil_mode)-flatten-fc-
    dropout-fc (the batch norms are folded into the convolutions at import);
  * an MLP on flat (N, 784) inputs, Gemm layers with a final Softmax (which
    the import strips: the teacher serves logits).

`teacher_server import --input_mean=0.1307 --input_std=0.3081` converts both
into checkpoints that record that preprocessing; `student_trainer export
--dump_outputs` writes the C++ engine's logits for the first 1,000 MNIST test
images (preprocessed as the checkpoint says), which must match ONNX
Runtime's (this interpreter's onnxruntime) on the normalised images within
1e-4 with identical classes, and the re-exported model (whose graph
normalises raw pixels itself) must match too. `teacher_server serve --onnx
--input_mean=0.1307 --input_std=0.3081` serves the CNN imported in memory; a
client sends raw pixels, and the soft targets at T=1 and T=4 (asked through
Debian's python3-grpcio) are ONNX Runtime's softmax(logits / T) of the
normalised images within 1e-4; ModelInfo reports the mean, std and the
producer. A student_trainer distill from the served CNN (its own jittered
images sent as raw pixels) beats the same student trained on the labels. A model with an LSTM (built with
onnx.helper) is refused naming the node, and no file is written.

Run:
  python3 tests/python/onnx_import_test.py --teacher_server build/teacher_server/teacher_server \\
      --student_trainer build/student_trainer/student_trainer --mnist /work/shared/data/mnist
"""

import argparse
import gzip
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np

try:
    import onnx
    from onnx import TensorProto, helper
    import onnxruntime
except ImportError as error:  # pragma: no cover - environment problem
    sys.exit(f"{error}: install onnx and onnxruntime for {sys.executable}")

TEACHER_SERVER = "teacher_server"
# torchvision's MNIST normalisation, given to the teacher as its preprocessing.
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
PREPROCESSING_FLAGS = [f"--input_mean={MNIST_MEAN}", f"--input_std={MNIST_STD}"]
STUDENT_TRAINER = "student_trainer"
MNIST_DIR = "/work/shared/data/mnist"
TORCH_PYTHON = "/usr/bin/python3"
COMPARED_IMAGES = 1000
TOLERANCE = 1e-4

# Trains and exports with PyTorch; argv: mnist_dir, out_dir.
TORCH_SCRIPT = r'''
import gzip, os, sys
import numpy as np
import torch
import torch.nn as nn

torch.manual_seed(0)
torch.set_num_threads(2)
mnist, out = sys.argv[1], sys.argv[2]

def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)

images = read_idx(os.path.join(mnist, "train-images-idx3-ubyte.gz"))[:6000]
labels = read_idx(os.path.join(mnist, "train-labels-idx1-ubyte.gz"))[:6000]
x_all = (torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 255.0 - 0.1307) / 0.3081
y_all = torch.tensor(labels, dtype=torch.int64)

class Cnn(nn.Module):
    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 5, padding=2), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.MaxPool2d(2, ceil_mode=True))  # 7x7 -> 4x4: the last window overhangs
        self.fc1 = nn.Linear(16 * 4 * 4, 64)
        self.dropout = nn.Dropout(0.3)
        self.fc2 = nn.Linear(64, 10)

    def forward(self, x):
        x = self.features(x)
        x = x.view(x.size(0), -1)
        return self.fc2(self.dropout(torch.relu(self.fc1(x))))

class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                 nn.Linear(64, 10))

    def forward(self, x):
        return torch.softmax(self.net(x), dim=1)

def train(model, flat, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    model.train()
    for step in range(steps):
        idx = torch.randint(0, len(x_all), (64,))
        x = x_all[idx].reshape(64, -1) if flat else x_all[idx]
        out = model(x)
        loss = nn.functional.nll_loss(torch.log(out + 1e-9), y_all[idx]) if flat else \
            nn.functional.cross_entropy(out, y_all[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()

for name, model, flat, dummy in (("cnn", Cnn(), False, torch.zeros(1, 1, 28, 28)),
                                 ("mlp", Mlp(), True, torch.zeros(1, 784))):
    train(model, flat, 300)
    torch.onnx.export(model, dummy, os.path.join(out, name + ".onnx"), opset_version=13,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
print("exported")
'''


# Asks a served teacher for soft targets (Debian's python3-grpcio, with the
# stubs of tests/python/teacher_client_test.py); argv: tests/python dir,
# port, stub dir, mnist dir, count, out prefix. Writes <prefix>_T<t>.npy.
CLIENT_SCRIPT = r'''
import os, sys
import numpy as np
sys.path.insert(0, sys.argv[1])
import grpc
import teacher_client_test as tct
port, stubs, mnist, count, prefix = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
pb2, pb2_grpc = tct._generate_stubs(stubs)
stub = pb2_grpc.TeacherStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
pixels = tct._read_idx_images(os.path.join(mnist, "t10k-images-idx3-ubyte.gz"), count)
# What the teacher says it does to raw pixels.
info = stub.GetModelInfo(pb2.GetModelInfoRequest(), timeout=60)
spec = info.contract.teacher.input
with open(f"{prefix}_info.txt", "w") as f:
    f.write(f"scale={spec.scale:.6g} mean={','.join(f'{v:.6g}' for v in spec.mean)} "
            f"std={','.join(f'{v:.6g}' for v in spec.std)} source={info.contract.teacher.source}\n")
# Raw pixels: the teacher applies its own preprocessing.
for t in (1.0, 4.0):
    request = pb2.SoftTargetsRequest(num_examples=count,
                                     pixels_u8=np.ascontiguousarray(pixels).tobytes(),
                                     options=pb2.TargetOptions(temperature=t))
    targets = stub.GetSoftTargets(request, timeout=60).targets
    np.save(f"{prefix}_T{int(t)}.npy",
            np.array(targets.values, dtype=np.float32).reshape(count, targets.width))
print("served")
'''


def _read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * k:8 + 4 * k], "big") for k in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _read_text(path):
    """The stripped contents of `path`, "" when it does not exist yet."""
    try:
        with open(path) as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""


def _run(args):
    env = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE")
    return subprocess.run(args, capture_output=True, text=True, timeout=900, env=env)


class OnnxImportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="onnx_import_test_")
        script = os.path.join(cls.tmp, "export.py")
        with open(script, "w") as f:
            f.write(TORCH_SCRIPT)
        torch_run = _run([TORCH_PYTHON, script, MNIST_DIR, cls.tmp])
        if torch_run.returncode != 0:
            raise RuntimeError(f"PyTorch training/export failed:\n{torch_run.stderr[-4000:]}")
        images = _read_idx(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
        cls.raw = images[:COMPARED_IMAGES].astype(np.float32)
        cls.normalised = ((cls.raw / np.float32(255.0) - np.float32(MNIST_MEAN)) /
                          np.float32(MNIST_STD))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def _import(self, name, extra=()):
        model = os.path.join(self.tmp, f"{name}.onnx")
        ckpt = os.path.join(self.tmp, f"{name}.ckpt")
        result = _run([TEACHER_SERVER, "import", f"--onnx={model}", f"--checkpoint={ckpt}",
                       *PREPROCESSING_FLAGS, *extra])
        self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        self.assertTrue(os.path.exists(ckpt))
        inspect = _run([TEACHER_SERVER, "inspect", f"--checkpoint={ckpt}"])
        self.assertEqual(inspect.returncode, 0, inspect.stderr[-4000:])
        summary = inspect.stdout + inspect.stderr
        self.assertIn("onnx:pytorch", summary)
        self.assertIn(f"mean [{MNIST_MEAN}], std [{MNIST_STD}]", summary)
        return model, ckpt, summary

    def _cpp_logits(self, name, ckpt):
        dump = os.path.join(self.tmp, f"{name}_cpp.f32")
        reexport = os.path.join(self.tmp, f"{name}_reexport.onnx")
        result = _run([STUDENT_TRAINER, "export", f"--checkpoint={ckpt}", f"--onnx={reexport}",
                       f"--data_dir={MNIST_DIR}", f"--dump_outputs={dump}",
                       f"--dump_count={COMPARED_IMAGES}", "--threads=1"])
        self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        cpp = np.fromfile(dump, dtype="<f4").reshape(COMPARED_IMAGES, 10)
        # The re-exported model takes raw pixel images and normalises them
        # itself (Mul, Sub, Div in its graph).
        self._compare(cpp, self._ort(reexport, self.raw.reshape(-1, 1, 28, 28), "pixels"))
        return cpp

    def _ort(self, model, inputs, name="input"):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(model, sess_options=options,
                                               providers=["CPUExecutionProvider"])
        (output,) = session.run(None, {name: inputs})
        return output

    def _compare(self, cpp, ort):
        diff = np.abs(cpp - ort).max()
        self.assertLess(diff, TOLERANCE, f"largest difference {diff}")
        np.testing.assert_array_equal(cpp.argmax(axis=1), ort.argmax(axis=1))

    def test_cnn_with_batch_norm_and_dropout(self):
        model, ckpt, summary = self._import("cnn")
        # The batch norms were folded: no batch-norm layer remains.
        self.assertNotIn("BatchNorm", summary)
        cpp = self._cpp_logits("cnn", ckpt)
        ort = self._ort(model, self.normalised.reshape(-1, 1, 28, 28))
        self._compare(cpp, ort)
        # A trained model, not a trivial one: it classifies most images.
        labels = _read_idx(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
        self.assertGreater((cpp.argmax(axis=1) == labels[:COMPARED_IMAGES]).mean(), 0.8)

    def test_served_soft_targets_of_an_imported_model(self):
        """serve --onnx imports in memory; soft targets at T=1 and T=4 are
        ONNX Runtime's softmax(logits / T)."""
        model = os.path.join(self.tmp, "cnn.onnx")
        port_file = os.path.join(self.tmp, "port")
        log = open(os.path.join(self.tmp, "serve.log"), "w")
        env = dict(os.environ, OMP_NUM_THREADS="2", OMP_WAIT_POLICY="PASSIVE")
        server = subprocess.Popen([TEACHER_SERVER, "serve", "--precision=f32", f"--onnx={model}", *PREPROCESSING_FLAGS,
                                   "--no_transfer_set",
                                   "--address=127.0.0.1:0", f"--port_file={port_file}",
                                   "--metrics_address=", "--threads=1"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            for _ in range(600):
                if _read_text(port_file):
                    break
                self.assertIsNone(server.poll(), "the server exited")
                time.sleep(0.1)
            port = _read_text(port_file)
            script = os.path.join(self.tmp, "client.py")
            with open(script, "w") as f:
                f.write(CLIENT_SCRIPT)
            prefix = os.path.join(self.tmp, "served")
            client = _run([TORCH_PYTHON, script, os.path.dirname(os.path.abspath(__file__)),
                           port, os.path.join(self.tmp, "stubs"), MNIST_DIR,
                           str(COMPARED_IMAGES), prefix])
            self.assertEqual(client.returncode, 0, client.stderr[-4000:])
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()
        with open(f"{prefix}_info.txt") as f:
            info = f.read()
        self.assertIn(f"scale=0.00392157 mean={MNIST_MEAN} std={MNIST_STD} "
                      "source=imported from onnx:pytorch ", info)
        logits = self._ort(model, self.normalised.reshape(-1, 1, 28, 28)).astype(np.float64)
        for t in (1, 4):
            served = np.load(f"{prefix}_T{t}.npy")
            z = logits / t
            e = np.exp(z - z.max(axis=1, keepdims=True))
            expected = e / e.sum(axis=1, keepdims=True)
            self.assertLess(np.abs(served - expected).max(), TOLERANCE, f"T={t}")
            np.testing.assert_array_equal(served.argmax(axis=1), expected.argmax(axis=1))

    def _test_errors(self, ckpt):
        inspect = _run([TEACHER_SERVER, "inspect", f"--checkpoint={ckpt}"])
        self.assertEqual(inspect.returncode, 0, inspect.stderr[-4000:])
        for line in (inspect.stdout + inspect.stderr).splitlines():
            if "test_errors = " in line:
                return int(line.split("test_errors = ")[1])
        self.fail(f"no test_errors in the summary of {ckpt}")

    def test_a_student_distils_from_the_served_import_and_beats_its_baseline(self):
        """serve --onnx (MNIST's mean/std) for a student_trainer distill on
        1,000 (jittered) images sent as raw pixels; it makes fewer test errors
        than the same student trained on those images' labels alone."""
        model = os.path.join(self.tmp, "cnn.onnx")
        port_file = os.path.join(self.tmp, "distill_port")
        log = open(os.path.join(self.tmp, "distill_serve.log"), "w")
        env = dict(os.environ, OMP_NUM_THREADS="1", OMP_WAIT_POLICY="PASSIVE")
        server = subprocess.Popen([TEACHER_SERVER, "serve", "--precision=f32", f"--onnx={model}", *PREPROCESSING_FLAGS,
                                   "--no_transfer_set", "--address=127.0.0.1:0",
                                   f"--port_file={port_file}", "--metrics_address=",
                                   "--threads=1"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env)
        student = ["--architecture=784-100-10", "--train_range=0:1000", "--epochs=15",
                   "--jitter=1", "--seed=5", "--threads=1", f"--data_dir={MNIST_DIR}"]
        try:
            for _ in range(600):
                if _read_text(port_file):
                    break
                self.assertIsNone(server.poll(), "the server exited")
                time.sleep(0.1)
            port = _read_text(port_file)
            distilled = os.path.join(self.tmp, "distilled.ckpt")
            result = _run([STUDENT_TRAINER, "distill", f"--teacher=127.0.0.1:{port}",
                           "--distill_temperature=4", "--alpha=0.9",
                           f"--checkpoint={distilled}", *student])
            self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=60)
            log.close()
        baseline = os.path.join(self.tmp, "baseline.ckpt")
        result = _run([STUDENT_TRAINER, "baseline", f"--checkpoint={baseline}", *student])
        self.assertEqual(result.returncode, 0, result.stderr[-4000:])
        distilled_errors, baseline_errors = self._test_errors(distilled), self._test_errors(baseline)
        print(f"distilled {distilled_errors} test errors, baseline {baseline_errors}")
        self.assertLess(distilled_errors, baseline_errors)

    def test_mlp_with_softmax_stripped(self):
        model = os.path.join(self.tmp, "mlp.onnx")
        ckpt = os.path.join(self.tmp, "mlp.ckpt")
        # A flat input needs --input_shape.
        refused = _run([TEACHER_SERVER, "import", f"--onnx={model}", f"--checkpoint={ckpt}"])
        self.assertNotEqual(refused.returncode, 0)
        self.assertIn("--input_shape", refused.stdout + refused.stderr)
        self.assertFalse(os.path.exists(ckpt))
        self._import("mlp", ["--input_shape=1,28,28"])
        cpp = self._cpp_logits("mlp", ckpt)
        probabilities = self._ort(model, self.normalised.reshape(-1, 784))
        # The teacher serves logits: their softmax is the model's output.
        e = np.exp(cpp - cpp.max(axis=1, keepdims=True))
        self._compare(e / e.sum(axis=1, keepdims=True), probabilities)
        np.testing.assert_array_equal(cpp.argmax(axis=1), probabilities.argmax(axis=1))

    def test_unsupported_operator_is_refused(self):
        x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1, 28, 28])
        y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])
        nodes = [
            helper.make_node("Flatten", ["input"], ["flat"], name="flatten"),
            helper.make_node("Unsqueeze", ["flat", "zero"], ["seq"], name="unsqueeze"),
            helper.make_node("LSTM", ["seq", "W", "R"], ["lstm_out"], name="my_lstm",
                             hidden_size=10),
            helper.make_node("Reshape", ["lstm_out", "shape"], ["output"], name="reshape"),
        ]
        inits = [
            helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
            helper.make_tensor("W", TensorProto.FLOAT, [1, 40, 784], np.zeros(40 * 784)),
            helper.make_tensor("R", TensorProto.FLOAT, [1, 40, 10], np.zeros(400)),
            helper.make_tensor("shape", TensorProto.INT64, [2], [-1, 10]),
        ]
        graph = helper.make_graph(nodes, "lstm", [x], [y], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        path = os.path.join(self.tmp, "lstm.onnx")
        onnx.save(model, path)
        ckpt = os.path.join(self.tmp, "lstm.ckpt")
        result = _run([TEACHER_SERVER, "import", f"--onnx={path}", f"--checkpoint={ckpt}"])
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('LSTM "my_lstm"', result.stdout + result.stderr)
        self.assertFalse(os.path.exists(ckpt))
        self.assertEqual([f for f in os.listdir(self.tmp) if f.startswith("lstm.ckpt")], [])


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--teacher_server", required=True)
    parser.add_argument("--student_trainer", required=True)
    parser.add_argument("--mnist", required=True)
    args, rest = parser.parse_known_args()
    TEACHER_SERVER = os.path.abspath(args.teacher_server)
    STUDENT_TRAINER = os.path.abspath(args.student_trainer)
    MNIST_DIR = args.mnist
    unittest.main(argv=[sys.argv[0]] + rest)
