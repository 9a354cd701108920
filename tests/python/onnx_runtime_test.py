#!/usr/bin/env python3
"""ONNX Runtime integration test for `student_trainer export`.

Trains a small student with the real binary, exports it as ONNX (logits, and
probabilities with --softmax), and checks with third-party code only:

  * onnx.checker (full check, shape inference included) accepts the model,
    which is opset 13 with the documented input and output;
  * ONNX Runtime, fed the first 1,000 MNIST test images as raw pixel values
    (0..255 floats), gives the C++ forward pass's outputs (written by the
    export command's --dump_outputs) within 1e-4, with identical predicted
    classes;
  * the export report's parameter count, file size and test errors agree
    with the model file and with ONNX Runtime on the whole test set;
  * a corrupt checkpoint is refused with a clear error and no model file.

Run:
  python3 tests/python/onnx_runtime_test.py \\
      --student_trainer build/student_trainer/student_trainer --mnist /work/shared/data/mnist

Needs numpy, onnx and onnxruntime from PyPI for this interpreter
(scripts/setup.sh installs them).
"""

import argparse
import gzip
import os
import re
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np

try:
    import onnx
    import onnxruntime
except ImportError as error:  # pragma: no cover - environment problem
    sys.exit(f"{error}: install onnx and onnxruntime for {sys.executable} "
             "(scripts/setup.sh does: python3 -m pip install onnx onnxruntime)")

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.normpath(os.path.join(_HERE, "..", ".."))

# Set from the command line in __main__ (before unittest.main).
STUDENT_TRAINER = os.path.join(_REPO, "build", "student_trainer", "student_trainer")
MNIST_DIR = "/work/shared/data/mnist"

ARCHITECTURE = "784-64-32-10"
COMPARED_IMAGES = 1000
TOLERANCE = 1e-4


def _read_idx(path):
    """An IDX gz file as a numpy uint8 array of its shape."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    magic = int.from_bytes(data[0:4], "big")
    assert magic >> 8 == 0x08, f"{path}: not an unsigned-byte IDX file (magic {magic:#x})"
    rank = magic & 0xFF
    shape = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(rank)]
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * rank)
    assert body.size == np.prod(shape), f"{path}: {body.size} bytes for shape {shape}"
    return body.reshape(shape)


def _run(args, timeout=300):
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout)


class OnnxRuntimeTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="onnx_runtime_test.")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        for path in (STUDENT_TRAINER, MNIST_DIR):
            if not os.path.exists(path):
                raise RuntimeError(f"{path} does not exist (see --student_trainer / --mnist)")

        cls.checkpoint = os.path.join(cls.tmp, "student.ckpt")
        train = _run([STUDENT_TRAINER, "baseline", f"--data_dir={MNIST_DIR}",
                      f"--architecture={ARCHITECTURE}", "--epochs=2", "--train_range=0:10000",
                      "--jitter=0", f"--checkpoint={cls.checkpoint}", "--threads=1"])
        if train.returncode != 0 or not os.path.exists(cls.checkpoint):
            raise RuntimeError(f"student_trainer baseline failed (exit {train.returncode}):\n"
                               f"{train.stderr[-4000:]}")

        cls.exports = {}
        for softmax in (False, True):
            name = "probabilities" if softmax else "logits"
            model = os.path.join(cls.tmp, f"student_{name}.onnx")
            dump = os.path.join(cls.tmp, f"cpp_{name}.f32")
            args = [STUDENT_TRAINER, "export", f"--checkpoint={cls.checkpoint}",
                    f"--onnx={model}", f"--data_dir={MNIST_DIR}", f"--dump_outputs={dump}",
                    f"--dump_count={COMPARED_IMAGES}", "--threads=1"]
            if softmax:
                args.append("--softmax")
            export = _run(args)
            if export.returncode != 0:
                raise RuntimeError(f"student_trainer export failed (exit {export.returncode}):\n"
                                   f"{export.stderr[-4000:]}")
            cpp = np.fromfile(dump, dtype="<f4").reshape(COMPARED_IMAGES, 10)
            cls.exports[name] = (model, cpp, export.stdout)

        cls.images = _read_idx(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
        cls.labels = _read_idx(os.path.join(MNIST_DIR, "t10k-labels-idx1-ubyte.gz"))
        # Raw pixel values: the model scales them itself.
        cls.pixels = cls.images.reshape(len(cls.images), -1).astype(np.float32)

    def _session(self, model):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return onnxruntime.InferenceSession(model, sess_options=options,
                                            providers=["CPUExecutionProvider"])

    def _run_model(self, model, pixels):
        session = self._session(model)
        (output,) = session.run(None, {"pixels": pixels})
        return output

    # -- the model file ------------------------------------------------------

    def test_checker_accepts_the_models(self):
        for name, (path, _, _) in self.exports.items():
            with self.subTest(output=name):
                model = onnx.load(path)
                onnx.checker.check_model(model, full_check=True)
                self.assertEqual(model.ir_version, 8)
                self.assertEqual([(o.domain, o.version) for o in model.opset_import], [("", 13)])
                self.assertEqual(model.producer_name, "distillery")
                ops = [node.op_type for node in model.graph.node]
                expected = ["Mul", "Gemm", "Relu", "Gemm", "Relu", "Gemm"]
                self.assertEqual(ops, expected + (["Softmax"] if name == "probabilities" else []))
                for node in model.graph.node:
                    if node.op_type == "Gemm":
                        attributes = {a.name: onnx.helper.get_attribute_value(a)
                                      for a in node.attribute}
                        self.assertEqual(attributes.get("transB"), 1)

    def test_input_and_output_as_runtime_sees_them(self):
        for name, (path, _, _) in self.exports.items():
            with self.subTest(output=name):
                session = self._session(path)
                (model_input,) = session.get_inputs()
                self.assertEqual(model_input.name, "pixels")
                self.assertEqual(model_input.type, "tensor(float)")
                self.assertEqual(model_input.shape, ["batch", 784])
                (model_output,) = session.get_outputs()
                self.assertEqual(model_output.name, name)
                self.assertEqual(model_output.shape, ["batch", 10])

    # -- outputs against the C++ forward pass --------------------------------

    def test_outputs_match_the_cpp_forward_pass(self):
        for name, (path, cpp, _) in self.exports.items():
            with self.subTest(output=name):
                ort = self._run_model(path, self.pixels[:COMPARED_IMAGES])
                self.assertEqual(ort.shape, (COMPARED_IMAGES, 10))
                self.assertEqual(ort.dtype, np.float32)
                diff = float(np.max(np.abs(ort - cpp)))
                self.assertLess(diff, TOLERANCE, f"{name}: max |onnxruntime - C++| = {diff}")
                mismatches = np.flatnonzero(ort.argmax(axis=1) != cpp.argmax(axis=1))
                self.assertEqual(mismatches.size, 0,
                                 f"{name}: predicted classes differ on images {mismatches[:20]}")
                if name == "probabilities":
                    np.testing.assert_allclose(ort.sum(axis=1), 1.0, rtol=0, atol=1e-5)
                else:
                    # A trained network, not a constant: the comparison means something.
                    self.assertGreater(float(np.std(cpp)), 0.5)

    def test_batch_size_is_free(self):
        path, cpp, _ = self.exports["logits"]
        session = self._session(path)
        for batch in (1, 7, 256):
            (ort,) = session.run(None, {"pixels": self.pixels[:batch]})
            np.testing.assert_allclose(ort, cpp[:batch], rtol=0, atol=TOLERANCE)

    # -- the report ----------------------------------------------------------

    def test_report(self):
        path, _, report = self.exports["logits"]
        sizes = [int(s) for s in ARCHITECTURE.split("-")]
        parameters = sum(a * b + b for a, b in zip(sizes, sizes[1:]))
        self.assertRegex(report, rf"ONNX export of student {ARCHITECTURE}")
        self.assertRegex(report, rf"parameters:\s+{parameters}\n")
        self.assertRegex(report, rf"file size:\s+{os.path.getsize(path)} bytes")
        match = re.search(r"test errors \(T=1\):\s+(\d+) of (\d+)", report)
        self.assertIsNotNone(match, report)
        errors, examples = int(match.group(1)), int(match.group(2))
        self.assertEqual(examples, len(self.labels))
        # The exported model makes exactly the errors the report claims.
        predicted = self._run_model(path, self.pixels).argmax(axis=1)
        self.assertEqual(int(np.sum(predicted != self.labels)), errors)
        self.assertLess(errors, 1500, "a trained student should do better than 15% errors")

    # -- errors --------------------------------------------------------------

    def test_corrupt_checkpoint_is_refused(self):
        corrupt = os.path.join(self.tmp, "corrupt.ckpt")
        with open(self.checkpoint, "rb") as f:
            data = bytearray(f.read())
        data[len(data) // 2] ^= 0x40  # a flipped bit in the weights
        with open(corrupt, "wb") as f:
            f.write(data)
        model = os.path.join(self.tmp, "corrupt.onnx")
        result = _run([STUDENT_TRAINER, "export", f"--checkpoint={corrupt}", f"--onnx={model}",
                       "--data_dir="])
        log = result.stdout + result.stderr  # spdlog writes to stdout
        self.assertEqual(result.returncode, 1, log)
        self.assertIn("CRC mismatch", log)
        self.assertFalse(os.path.exists(model))

    def test_missing_flags_are_a_usage_error(self):
        result = _run([STUDENT_TRAINER, "export", f"--checkpoint={self.checkpoint}"])
        log = result.stdout + result.stderr
        self.assertEqual(result.returncode, 2, log)
        self.assertIn("--onnx", log)


CONV_ARCHITECTURE = "conv5x5:8/same+bn,maxpool2,conv3x3:16+bn,avgpool2,fc:32,fc:10"


class ConvOnnxRuntimeTest(unittest.TestCase):
    """A convolutional student: Conv, BatchNormalization, MaxPool,
    AveragePool, Flatten, Gemm and Relu nodes, run by ONNX Runtime on
    (batch, 1, 28, 28) raw pixels, against the C++ forward pass."""

    ARCHITECTURE = CONV_ARCHITECTURE
    OPS = ["Mul", "Conv", "BatchNormalization", "Relu", "MaxPool", "Conv", "BatchNormalization",
           "Relu", "AveragePool", "Flatten", "Gemm", "Relu", "Gemm"]
    MIN_LOGIT_STD = 0.5

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="onnx_runtime_conv_test.")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, ignore_errors=True)
        cls.checkpoint = os.path.join(cls.tmp, "conv.ckpt")
        train = _run([STUDENT_TRAINER, "baseline", f"--data_dir={MNIST_DIR}",
                      f"--architecture={cls.ARCHITECTURE}", "--epochs=1",
                      "--train_range=0:3000", "--jitter=1", "--lr=0.05",
                      f"--checkpoint={cls.checkpoint}", "--threads=1"])
        if train.returncode != 0 or not os.path.exists(cls.checkpoint):
            raise RuntimeError(f"student_trainer baseline failed (exit {train.returncode}):\n"
                               f"{train.stdout[-4000:]}{train.stderr[-4000:]}")
        cls.model = os.path.join(cls.tmp, "conv.onnx")
        dump = os.path.join(cls.tmp, "cpp_logits.f32")
        export = _run([STUDENT_TRAINER, "export", f"--checkpoint={cls.checkpoint}",
                       f"--onnx={cls.model}", f"--data_dir={MNIST_DIR}", f"--dump_outputs={dump}",
                       f"--dump_count={COMPARED_IMAGES}", "--threads=1"])
        if export.returncode != 0:
            raise RuntimeError(f"student_trainer export failed (exit {export.returncode}):\n"
                               f"{export.stdout[-4000:]}{export.stderr[-4000:]}")
        cls.cpp = np.fromfile(dump, dtype="<f4").reshape(COMPARED_IMAGES, 10)
        images = _read_idx(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"))
        cls.pixels = images[:COMPARED_IMAGES].reshape(COMPARED_IMAGES, 1, 28, 28).astype(np.float32)

    def test_checker_accepts_the_model_with_its_layers(self):
        model = onnx.load(self.model)
        onnx.checker.check_model(model, full_check=True)
        ops = [node.op_type for node in model.graph.node]
        self.assertEqual(ops, self.OPS)

    def test_outputs_match_the_cpp_forward_pass(self):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        session = onnxruntime.InferenceSession(self.model, sess_options=options,
                                               providers=["CPUExecutionProvider"])
        (model_input,) = session.get_inputs()
        self.assertEqual(model_input.shape, ["batch", 1, 28, 28])
        (ort,) = session.run(None, {"pixels": self.pixels})
        diff = float(np.max(np.abs(ort - self.cpp)))
        self.assertLess(diff, TOLERANCE, f"max |onnxruntime - C++| = {diff}")
        mismatches = np.flatnonzero(ort.argmax(axis=1) != self.cpp.argmax(axis=1))
        self.assertEqual(mismatches.size, 0, f"classes differ on images {mismatches[:20]}")
        self.assertGreater(float(np.std(self.cpp)), self.MIN_LOGIT_STD)


class ActivationsOnnxRuntimeTest(ConvOnnxRuntimeTest):
    """The same with leaky ReLU, tanh, global average pooling and sigmoid:
    LeakyRelu (its alpha), Tanh, GlobalAveragePool and Sigmoid nodes."""

    ARCHITECTURE = ("conv5x5:8/same:none,leakyrelu:0.1,maxpool2,conv3x3:16:none,tanh,gap,"
                    "fc:32:none,sigmoid,fc:10")
    OPS = ["Mul", "Conv", "LeakyRelu", "MaxPool", "Conv", "Tanh", "GlobalAveragePool", "Flatten",
           "Gemm", "Sigmoid", "Gemm"]
    MIN_LOGIT_STD = 0.05

    def test_leaky_relu_keeps_its_slope(self):
        model = onnx.load(self.model)
        (leaky,) = [n for n in model.graph.node if n.op_type == "LeakyRelu"]
        (alpha,) = [a for a in leaky.attribute if a.name == "alpha"]
        self.assertAlmostEqual(onnx.helper.get_attribute_value(alpha), 0.1, places=6)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--student_trainer", default=STUDENT_TRAINER,
                        help="student_trainer binary")
    parser.add_argument("--mnist", default=MNIST_DIR, help="directory of the MNIST IDX gz files")
    args, rest = parser.parse_known_args()
    STUDENT_TRAINER = os.path.abspath(args.student_trainer)
    MNIST_DIR = os.path.abspath(args.mnist)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
