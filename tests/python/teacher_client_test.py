#!/usr/bin/python3
"""Third-party-client integration test for the C++ teacher server.

A Python gRPC client, sharing no code with the server, talks to a real
`teacher_server serve` process:

  * through the generic gRPC health and reflection services, with raw
    (bytes-in, bytes-out) calls and hand-encoded protobuf, the way any
    off-the-shelf tool (grpcurl, grpc_health_probe, a load balancer) would;
  * through stubs generated at test time from the repository's
    proto/distill/v1/teacher.proto (the wire contract);
  * through the Prometheus metrics endpoint.

Run:
  /usr/bin/python3 tests/python/teacher_client_test.py \
      --server build/teacher_server/teacher_server --mnist /work/shared/data/mnist

Needs Debian's python3-grpcio, python3-protobuf and python3-numpy, plus a
protoc that understands proto3 `optional` and a gRPC Python code generator:
either python3 -m grpc_tools.protoc (if its bundled protoc is new enough) or
/usr/bin/protoc with /usr/bin/grpc_python_plugin (protobuf-compiler and
protobuf-compiler-grpc, which the C++ build needs anyway).
"""

import argparse
import gzip
import importlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request

import grpc
import numpy as np
from google.protobuf import descriptor_pb2

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.normpath(os.path.join(_HERE, "..", ".."))
_PROTO_ROOT = os.path.join(_REPO, "proto")
_TEACHER_PROTO = os.path.join(_PROTO_ROOT, "distill", "v1", "teacher.proto")

# Set from the command line in __main__ (before unittest.main).
SERVER_BINARY = os.path.join(_REPO, "build", "teacher_server", "teacher_server")
MNIST_DIR = "/work/shared/data/mnist"

TRANSFER_SET_SIZE = 1000
ARCHITECTURE = "784-32-10"
RPC_TIMEOUT = 10  # seconds, per call

# Method paths of gRPC's standard services (no generated code for these).
HEALTH_CHECK = "/grpc.health.v1.Health/Check"
REFLECTION_INFO = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"

# Field numbers, from grpc's public protos:
# src/proto/grpc/health/v1/health.proto
HEALTH_REQUEST_SERVICE = 1  # HealthCheckRequest.service (string)
HEALTH_RESPONSE_STATUS = 1  # HealthCheckResponse.status (enum ServingStatus)
SERVING, NOT_SERVING = 1, 2  # HealthCheckResponse.ServingStatus
# src/proto/grpc/reflection/v1alpha/reflection.proto
REFL_REQ_FILE_CONTAINING_SYMBOL = 4  # ServerReflectionRequest (string, oneof)
REFL_REQ_LIST_SERVICES = 7  # ServerReflectionRequest (string, oneof)
REFL_RESP_FILE_DESCRIPTOR = 4  # ServerReflectionResponse -> FileDescriptorResponse
REFL_RESP_LIST_SERVICES = 6  # ServerReflectionResponse -> ListServiceResponse
REFL_RESP_ERROR = 7  # ServerReflectionResponse -> ErrorResponse
FILE_DESCRIPTOR_PROTO = 1  # FileDescriptorResponse.file_descriptor_proto (repeated bytes)
LIST_SERVICE_SERVICE = 1  # ListServiceResponse.service (repeated ServiceResponse)
SERVICE_RESPONSE_NAME = 1  # ServiceResponse.name (string)
ERROR_RESPONSE_CODE = 1  # ErrorResponse.error_code (int32, a grpc status code)


# ---------------------------------------------------------------------------
# Minimal protobuf wire format, enough for the health and reflection messages.


def _encode_varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _encode_string_field(field_number, value):
    """A length-delimited field (wire type 2)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return _encode_varint(field_number << 3 | 2) + _encode_varint(len(data)) + data


def _decode_varint(buf, pos):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _decode_fields(buf):
    """Returns [(field_number, value)]: ints for varints/fixed, bytes for wire type 2."""
    fields, pos = [], 0
    while pos < len(buf):
        key, pos = _decode_varint(buf, pos)
        number, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _decode_varint(buf, pos)
        elif wire_type == 1:
            value, pos = int.from_bytes(buf[pos:pos + 8], "little"), pos + 8
        elif wire_type == 2:
            length, pos = _decode_varint(buf, pos)
            value, pos = bytes(buf[pos:pos + length]), pos + length
        elif wire_type == 5:
            value, pos = int.from_bytes(buf[pos:pos + 4], "little"), pos + 4
        else:
            raise ValueError(f"unsupported wire type {wire_type} (field {number})")
        fields.append((number, value))
    return fields


def _field_values(buf, number):
    return [value for n, value in _decode_fields(buf) if n == number]


# ---------------------------------------------------------------------------
# Helpers.


def _identity(data):
    return data


def _generate_stubs(out_dir):
    """Generates teacher_pb2 / teacher_pb2_grpc into out_dir and imports them.

    Tries grpc_tools first, then the system protoc with grpc_python_plugin.
    Raises RuntimeError, naming every attempt, if no generator works: a test
    that cannot build its client must fail, never skip.
    """
    os.makedirs(out_dir, exist_ok=True)
    attempts = []
    commands = []
    try:
        import grpc_tools  # noqa: F401  (only to learn whether it exists)
        includes = [f"-I{_PROTO_ROOT}"]
        well_known = os.path.join(os.path.dirname(grpc_tools.__file__), "_proto")
        if os.path.isdir(well_known):
            includes.append(f"-I{well_known}")
        commands.append(("grpc_tools.protoc",
                         [sys.executable, "-m", "grpc_tools.protoc", *includes,
                          f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                          _TEACHER_PROTO]))
    except ImportError as e:
        attempts.append(f"python3 -m grpc_tools.protoc: cannot import grpc_tools ({e}); "
                        "install python3-grpc-tools")
    protoc, plugin = shutil.which("protoc"), shutil.which("grpc_python_plugin")
    if protoc and plugin:
        commands.append((f"{protoc} + {plugin}",
                         [protoc, f"-I{_PROTO_ROOT}", f"--plugin=protoc-gen-grpc_python={plugin}",
                          f"--python_out={out_dir}", f"--grpc_python_out={out_dir}",
                          _TEACHER_PROTO]))
    else:
        attempts.append("system protoc + grpc_python_plugin: not found "
                        "(install protobuf-compiler and protobuf-compiler-grpc)")
    for name, command in commands:
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if result.returncode == 0:
            sys.path.insert(0, out_dir)
            try:
                pb2 = importlib.import_module("distill.v1.teacher_pb2")
                pb2_grpc = importlib.import_module("distill.v1.teacher_pb2_grpc")
            except Exception as e:  # generated code that this runtime cannot load
                sys.path.remove(out_dir)
                for module in [m for m in sys.modules if m.startswith("distill")]:
                    del sys.modules[module]
                attempts.append(f"{name}: generated code does not import: {e!r}")
                continue
            if attempts:
                print(f"note: stubs generated with {name}; earlier attempts failed:\n  "
                      + "\n  ".join(attempts), file=sys.stderr)
            return pb2, pb2_grpc
        attempts.append(f"{name}: exit {result.returncode}: {result.stderr.strip()}")
        shutil.rmtree(os.path.join(out_dir, "distill"), ignore_errors=True)
    raise RuntimeError("cannot generate Python stubs for " + _TEACHER_PROTO + ":\n  "
                       + "\n  ".join(attempts))


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_idx_images(path, count):
    """The first `count` images of an IDX3 gz file, as uint8 [count, rows, cols]."""
    with gzip.open(path, "rb") as f:
        header = f.read(16)
        magic, total, rows, cols = (int.from_bytes(header[i:i + 4], "big") for i in (0, 4, 8, 12))
        assert magic == 2051, f"{path}: not an IDX3 image file (magic {magic})"
        assert count <= total, f"{path}: {total} images, {count} wanted"
        data = f.read(count * rows * cols)
    return np.frombuffer(data, dtype=np.uint8).reshape(count, rows, cols)


def _tail(path, limit=4000):
    try:
        with open(path, "r", errors="replace") as f:
            text = f.read()
    except OSError:
        return "(no output)"
    return text[-limit:] if text else "(empty)"


def _entropy(p):
    p = np.clip(p.astype(np.float64), 1e-30, 1.0)
    return -(p * np.log(p)).sum(axis=1)


def _softmax(z, temperature):
    z = z.astype(np.float64) / temperature
    z -= z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


# ---------------------------------------------------------------------------


class TeacherClientTest(unittest.TestCase):
    """One trained teacher and one server process for all tests."""

    @classmethod
    def setUpClass(cls):
        cls.proc = None
        cls.channel = None
        cls.tmp = tempfile.mkdtemp(prefix="teacher_client_test.")
        cls.addClassCleanup(cls._cleanup)

        for path in (SERVER_BINARY, MNIST_DIR):
            if not os.path.exists(path):
                raise RuntimeError(f"{path} does not exist (see --server / --mnist)")
        cls.pb2, cls.pb2_grpc = _generate_stubs(os.path.join(cls.tmp, "gen"))

        checkpoint = os.path.join(cls.tmp, "teacher.ckpt")
        train = subprocess.run(
            [SERVER_BINARY, "train", f"--data_dir={MNIST_DIR}", f"--architecture={ARCHITECTURE}",
             "--epochs=1", "--train_range=0:3000", "--input_dropout=0", "--hidden_dropout=0",
             "--jitter=0", f"--checkpoint={checkpoint}", "--threads=1"],
            capture_output=True, text=True, timeout=120)
        if train.returncode != 0 or not os.path.exists(checkpoint):
            raise RuntimeError(f"teacher_server train failed (exit {train.returncode}):\n"
                               f"{train.stderr[-4000:]}")

        cls.metrics_port = _free_port()
        port_file = os.path.join(cls.tmp, "port")
        cls.server_log = os.path.join(cls.tmp, "serve.log")
        with open(cls.server_log, "wb") as log:
            cls.proc = subprocess.Popen(
                [SERVER_BINARY, "serve", "--precision=f32", f"--checkpoint={checkpoint}", f"--data_dir={MNIST_DIR}",
                 f"--transfer_range=0:{TRANSFER_SET_SIZE}", "--address=127.0.0.1:0",
                 f"--port_file={port_file}", f"--metrics_address=127.0.0.1:{cls.metrics_port}",
                 "--threads=1"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        port = None
        while port is None:
            if cls.proc.poll() is not None:
                raise RuntimeError(f"teacher_server serve exited with {cls.proc.returncode} "
                                   f"before serving:\n{_tail(cls.server_log)}")
            if time.monotonic() > deadline:
                raise RuntimeError("teacher_server serve wrote no port file within 60 s:\n"
                                   + _tail(cls.server_log))
            try:
                with open(port_file) as f:
                    port = int(f.read().strip())
            except (OSError, ValueError):
                time.sleep(0.05)
        cls.target = f"127.0.0.1:{port}"
        cls.channel = grpc.insecure_channel(cls.target)
        grpc.channel_ready_future(cls.channel).result(timeout=10)
        cls.stub = cls.pb2_grpc.TeacherStub(cls.channel)

        cls.test_images = _read_idx_images(os.path.join(MNIST_DIR, "t10k-images-idx3-ubyte.gz"),
                                           64)

    @classmethod
    def tearDownClass(cls):
        if cls.channel is not None:
            cls.channel.close()
            cls.channel = None
        proc, cls.proc = cls.proc, None
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("the server did not exit within 30 s of SIGTERM:\n"
                                 + _tail(cls.server_log))
        if code != 0:
            raise AssertionError(f"the server exited with {code} after SIGTERM, not 0:\n"
                                 + _tail(cls.server_log))

    @classmethod
    def _cleanup(cls):
        # Runs even if setUpClass failed (then tearDownClass does not).
        if cls.channel is not None:
            cls.channel.close()
        if cls.proc is not None and cls.proc.poll() is None:
            cls.proc.kill()
            cls.proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    # -- helpers -------------------------------------------------------------

    def _health(self, service):
        check = self.channel.unary_unary(HEALTH_CHECK, request_serializer=_identity,
                                         response_deserializer=_identity)
        response = check(_encode_string_field(HEALTH_REQUEST_SERVICE, service),
                         timeout=RPC_TIMEOUT)
        statuses = _field_values(response, HEALTH_RESPONSE_STATUS)
        # proto3 omits a zero enum (UNKNOWN).
        return statuses[-1] if statuses else 0

    def _reflection(self, requests):
        info = self.channel.stream_stream(REFLECTION_INFO, request_serializer=_identity,
                                          response_deserializer=_identity)
        responses = list(info(iter(requests), timeout=RPC_TIMEOUT))
        self.assertEqual(len(responses), len(requests))
        return responses

    def _soft_targets(self, pixels, **options):
        request = self.pb2.SoftTargetsRequest(num_examples=len(pixels),
                                              pixels_u8=np.ascontiguousarray(pixels).tobytes(),
                                              options=self.pb2.TargetOptions(**options))
        response = self.stub.GetSoftTargets(request, timeout=RPC_TIMEOUT)
        targets = response.targets
        self.assertEqual(targets.num_examples, len(pixels))
        self.assertEqual(targets.width, 10)
        values = np.array(targets.values, dtype=np.float32).reshape(len(pixels), 10)
        return response.contract, values

    def _assert_rpc_error(self, code, call, *args, **kwargs):
        with self.assertRaises(grpc.RpcError) as raised:
            call(*args, timeout=RPC_TIMEOUT, **kwargs)
        self.assertEqual(raised.exception.code(), code, raised.exception.details())
        return raised.exception

    # -- health --------------------------------------------------------------

    def test_health_serving(self):
        self.assertEqual(self._health(""), SERVING)
        self.assertEqual(self._health("distill.v1.Teacher"), SERVING)

    def test_health_unknown_service_is_not_found(self):
        check = self.channel.unary_unary(HEALTH_CHECK, request_serializer=_identity,
                                         response_deserializer=_identity)
        self._assert_rpc_error(grpc.StatusCode.NOT_FOUND, check,
                               _encode_string_field(HEALTH_REQUEST_SERVICE, "no.such.Service"))

    # -- reflection ----------------------------------------------------------

    def test_reflection_lists_services(self):
        (response,) = self._reflection([_encode_string_field(REFL_REQ_LIST_SERVICES, "*")])
        lists = _field_values(response, REFL_RESP_LIST_SERVICES)
        self.assertEqual(len(lists), 1, f"no list_services_response in {response!r}")
        names = {
            _field_values(service, SERVICE_RESPONSE_NAME)[0].decode()
            for service in _field_values(lists[0], LIST_SERVICE_SERVICE)
        }
        self.assertIn("distill.v1.Teacher", names)
        self.assertIn("grpc.health.v1.Health", names)

    def test_reflection_describes_teacher(self):
        found, unknown = self._reflection([
            _encode_string_field(REFL_REQ_FILE_CONTAINING_SYMBOL, "distill.v1.Teacher"),
            _encode_string_field(REFL_REQ_FILE_CONTAINING_SYMBOL, "no.such.Symbol"),
        ])
        descriptor_responses = _field_values(found, REFL_RESP_FILE_DESCRIPTOR)
        self.assertEqual(len(descriptor_responses), 1, f"no file_descriptor_response: {found!r}")
        methods = None
        for blob in _field_values(descriptor_responses[0], FILE_DESCRIPTOR_PROTO):
            file = descriptor_pb2.FileDescriptorProto.FromString(blob)
            for service in file.service:
                if file.package == "distill.v1" and service.name == "Teacher":
                    methods = {m.name: m for m in service.method}
        self.assertIsNotNone(methods, "no distill.v1.Teacher service in the descriptors")
        self.assertEqual(set(methods), {"GetModelInfo", "GetSoftTargets", "StreamTransferSet"})
        self.assertTrue(methods["StreamTransferSet"].server_streaming)
        self.assertFalse(methods["GetSoftTargets"].server_streaming)
        self.assertEqual(methods["GetSoftTargets"].input_type, ".distill.v1.SoftTargetsRequest")

        errors = _field_values(unknown, REFL_RESP_ERROR)
        self.assertEqual(len(errors), 1, f"no error_response for an unknown symbol: {unknown!r}")
        self.assertEqual(_field_values(errors[0], ERROR_RESPONSE_CODE),
                         [grpc.StatusCode.NOT_FOUND.value[0]])

    # -- Teacher service -----------------------------------------------------

    def test_model_info(self):
        info = self.stub.GetModelInfo(self.pb2.GetModelInfoRequest(), timeout=RPC_TIMEOUT)
        self.assertEqual(info.architecture, ARCHITECTURE)
        self.assertEqual(info.num_classes, 10)
        self.assertEqual((info.image_rows, info.image_cols), (28, 28))
        self.assertRegex(info.teacher_hash, r"^[0-9a-fA-F]{16}$")
        self.assertEqual(info.transfer_set_size, TRANSFER_SET_SIZE)
        self.assertGreater(info.input_scale, 0)
        self.assertGreater(info.default_temperature, 0)
        self.assertGreaterEqual(info.max_batch_size, 128)

    def test_soft_targets_on_mnist_pixels(self):
        info = self.stub.GetModelInfo(self.pb2.GetModelInfoRequest(), timeout=RPC_TIMEOUT)
        pixels = self.test_images
        contract, probabilities = self._soft_targets(pixels, temperature=4.0)
        self.assertEqual(contract.teacher_hash, info.teacher_hash)
        self.assertEqual(contract.temperature, 4.0)
        self.assertEqual(contract.representation, self.pb2.PROBABILITIES)
        self.assertEqual(contract.num_classes, 10)
        self.assertTrue(np.all(probabilities >= 0))
        np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=0, atol=1e-5)

        contract, logits = self._soft_targets(pixels, representation=self.pb2.LOGITS)
        self.assertEqual(contract.representation, self.pb2.LOGITS)
        np.testing.assert_array_equal(probabilities.argmax(axis=1), logits.argmax(axis=1))
        # LOGITS are z before any temperature: softmax(z / 4) is what T=4 gave.
        np.testing.assert_allclose(_softmax(logits, 4.0), probabilities, rtol=0, atol=1e-5)

        _, cold = self._soft_targets(pixels, temperature=1.0)
        _, hot = self._soft_targets(pixels, temperature=20.0)
        cold_entropy, hot_entropy = _entropy(cold), _entropy(hot)
        self.assertTrue(np.all(hot_entropy > cold_entropy),
                        f"T=20 entropy not above T=1 for rows "
                        f"{np.nonzero(hot_entropy <= cold_entropy)[0].tolist()}")

    def test_soft_targets_rejects_bad_requests(self):
        inputs = [0.0] * 784
        inputs[100] = math.nan
        error = self._assert_rpc_error(
            grpc.StatusCode.INVALID_ARGUMENT, self.stub.GetSoftTargets,
            self.pb2.SoftTargetsRequest(num_examples=1, inputs_f32=inputs))
        self.assertIn("finite", error.details())

        request = self.pb2.SoftTargetsRequest(num_examples=1,
                                              pixels_u8=self.test_images[0].tobytes(),
                                              options=self.pb2.TargetOptions(temperature=0.0))
        # `optional`: an explicit 0 is on the wire, not read as "use the default".
        self.assertTrue(request.options.HasField("temperature"))
        self._assert_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, self.stub.GetSoftTargets,
                               request)

    def test_stream_transfer_set_shards(self):
        shards = []
        first_batch = None
        for shard in range(2):
            request = self.pb2.TransferSetRequest(epoch=0, seed=7, shard_index=shard,
                                                  num_shards=2, batch_size=128)
            ids = []
            batches = list(self.stub.StreamTransferSet(request, timeout=RPC_TIMEOUT))
            self.assertEqual(len(batches), 4)  # ceil(500 / 128)
            for i, batch in enumerate(batches):
                rows = len(batch.example_ids)
                self.assertEqual((batch.batch_index, batch.num_batches), (i, 4))
                self.assertLessEqual(rows, 128)
                self.assertEqual(len(batch.pixels_u8), rows * 784)
                self.assertEqual((batch.targets.num_examples, batch.targets.width), (rows, 10))
                self.assertEqual(len(batch.targets.values), rows * 10)
                ids.extend(batch.example_ids)
            if shard == 0:
                first_batch = batches[0]
            self.assertEqual(len(ids), len(set(ids)), f"shard {shard} repeats examples")
            shards.append(set(ids))
        self.assertFalse(shards[0] & shards[1], "the two shards share examples")
        self.assertEqual(shards[0] | shards[1], set(range(TRANSFER_SET_SIZE)))

        # The ids index the transfer set, training images [0, 1000): the pixels
        # sent are those images, and their targets match GetSoftTargets' own.
        train = _read_idx_images(os.path.join(MNIST_DIR, "train-images-idx3-ubyte.gz"),
                                 TRANSFER_SET_SIZE)
        ids = np.array(first_batch.example_ids)
        pixels = np.frombuffer(first_batch.pixels_u8, dtype=np.uint8).reshape(len(ids), 28, 28)
        np.testing.assert_array_equal(pixels, train[ids])
        streamed = np.array(first_batch.targets.values, dtype=np.float32).reshape(len(ids), 10)
        _, direct = self._soft_targets(pixels, temperature=first_batch.contract.temperature)
        np.testing.assert_allclose(streamed, direct, rtol=0, atol=1e-4)

    # -- metrics -------------------------------------------------------------

    def test_metrics_endpoint(self):
        # Make sure there is something to count, whatever ran before.
        self._soft_targets(self.test_images[:8], temperature=2.0)
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=RPC_TIMEOUT) as response:
            text = response.read().decode()

        def samples(name):
            pattern = re.compile(r"^" + re.escape(name) + r"(\{[^}]*\})?\s+(\S+)", re.M)
            return [(m.group(1) or "", float(m.group(2))) for m in pattern.finditer(text)]

        ok = [value for labels, value in samples("distill_requests_total")
              if 'method="GetSoftTargets"' in labels and 'code="OK"' in labels]
        self.assertEqual(len(ok), 1, f"no GetSoftTargets/OK series in:\n{text}")
        self.assertGreaterEqual(ok[0], 1)
        examples = [value for labels, value in samples("distill_examples_total")
                    if 'method="GetSoftTargets"' in labels]
        self.assertTrue(examples and examples[0] >= 8, f"distill_examples_total: {examples}")
        self.assertIn("distill_forward_pass_examples", text)
        (passes,) = [value for _, value in samples("distill_forward_pass_examples_count")]
        self.assertGreaterEqual(passes, 1)
        self.assertIn("distill_request_latency_seconds", text)


class MutualTlsTeacherClientTest(unittest.TestCase):
    """The same third-party client through mutual TLS and a bearer token
    (certificates made by tests/make_test_certs.sh with openssl), using
    python-grpcio's own TLS and call credentials."""

    TOKEN = "py-client-token-8d41"

    @classmethod
    def setUpClass(cls):
        cls.proc = None
        cls.tmp = tempfile.mkdtemp(prefix="teacher_client_tls_test.")
        cls.addClassCleanup(cls._cleanup)
        cls.pb2, cls.pb2_grpc = _generate_stubs(os.path.join(cls.tmp, "gen"))
        certs = subprocess.run(["/bin/bash", os.path.join(_HERE, "..", "make_test_certs.sh"),
                                cls.tmp], capture_output=True, text=True, timeout=60)
        if certs.returncode != 0:
            raise RuntimeError(f"make_test_certs.sh failed:\n{certs.stderr}")
        cls.pem = {}
        for name in ("ca.pem", "client.pem", "client.key", "other_client.pem",
                     "other_client.key"):
            with open(os.path.join(cls.tmp, name), "rb") as f:
                cls.pem[name] = f.read()
        token_file = os.path.join(cls.tmp, "token")
        with open(token_file, "w") as f:
            f.write(cls.TOKEN + "\n")
        checkpoint = os.path.join(cls.tmp, "teacher.ckpt")
        train = subprocess.run(
            [SERVER_BINARY, "train", f"--data_dir={MNIST_DIR}", "--architecture=784-16-10",
             "--epochs=1", "--train_range=0:1000", f"--checkpoint={checkpoint}", "--threads=1"],
            capture_output=True, text=True, timeout=120)
        if train.returncode != 0:
            raise RuntimeError(f"teacher_server train failed:\n{train.stderr[-4000:]}")
        port_file = os.path.join(cls.tmp, "port")
        cls.server_log = os.path.join(cls.tmp, "serve.log")
        with open(cls.server_log, "wb") as log:
            cls.proc = subprocess.Popen(
                [SERVER_BINARY, "serve", "--precision=f32", f"--checkpoint={checkpoint}", "--no_transfer_set",
                 "--address=127.0.0.1:0", f"--port_file={port_file}", "--metrics_address=",
                 "--threads=1", f"--tls_cert_file={cls.tmp}/server.pem",
                 f"--tls_key_file={cls.tmp}/server.key", f"--tls_client_ca_file={cls.tmp}/ca.pem",
                 f"--auth_token_file={token_file}"],
                stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while not os.path.exists(port_file):
            if cls.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the TLS teacher did not start:\n" + _tail(cls.server_log))
            time.sleep(0.05)
        with open(port_file) as f:  # written by rename: whole once it exists
            cls.target = f"127.0.0.1:{int(f.read().strip())}"

    @classmethod
    def _cleanup(cls):
        if cls.proc is not None and cls.proc.poll() is None:
            cls.proc.send_signal(signal.SIGTERM)
            try:
                cls.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                cls.proc.kill()
                cls.proc.wait()
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def _stub(self, cert="client.pem", key="client.key", token=None):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=self.pem["ca.pem"],
            private_key=self.pem[key] if key else None,
            certificate_chain=self.pem[cert] if cert else None)
        if token is not None:
            credentials = grpc.composite_channel_credentials(
                credentials, grpc.access_token_call_credentials(token))
        channel = grpc.secure_channel(self.target, credentials)
        self.addCleanup(channel.close)
        return self.pb2_grpc.TeacherStub(channel)

    def _soft_targets(self, stub):
        request = self.pb2.SoftTargetsRequest(num_examples=1, pixels_u8=bytes(784))
        return stub.GetSoftTargets(request, timeout=RPC_TIMEOUT)

    def test_client_certificate_and_token_are_served(self):
        stub = self._stub(token=self.TOKEN)
        self.assertEqual(stub.GetModelInfo(self.pb2.GetModelInfoRequest(),
                                           timeout=RPC_TIMEOUT).architecture, "784-16-10")
        self.assertEqual(self._soft_targets(stub).targets.num_examples, 1)

    def test_wrong_or_missing_token_is_unauthenticated(self):
        for stub in (self._stub(token="not-the-token"), self._stub(token=None)):
            with self.assertRaises(grpc.RpcError) as raised:
                self._soft_targets(stub)
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAUTHENTICATED)
        self.assertEqual(self._soft_targets(self._stub(token=self.TOKEN)).targets.num_examples, 1)

    def test_missing_or_foreign_client_certificate_is_refused(self):
        for cert, key in ((None, None), ("other_client.pem", "other_client.key")):
            with self.assertRaises(grpc.RpcError) as raised:
                self._soft_targets(self._stub(cert=cert, key=key, token=self.TOKEN))
            self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)
        self.assertEqual(self._soft_targets(self._stub(token=self.TOKEN)).targets.num_examples, 1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    parser.add_argument("--server", default=SERVER_BINARY, help="teacher_server binary")
    parser.add_argument("--mnist", default=MNIST_DIR, help="directory of the MNIST IDX gz files")
    args, rest = parser.parse_known_args()
    SERVER_BINARY = os.path.abspath(args.server)
    MNIST_DIR = os.path.abspath(args.mnist)
    unittest.main(argv=[sys.argv[0]] + rest, verbosity=2)
