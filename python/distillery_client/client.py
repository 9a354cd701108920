"""TeacherClient: a student's connection to its teacher(s), in Python.

A port of student_trainer/teacher_client.cc, behaviour for behaviour:

Fault tolerance: a call that fails with UNAVAILABLE, DEADLINE_EXCEEDED,
ABORTED, CANCELLED, or RESOURCE_EXHAUSTED marked transient by the teacher
(a message starting "[transient] ": a full queue, too many calls, the stream
time limit; not a message over the size limit, which fails at once) is
retried, on the next replica when there are several, with exponential
backoff and full jitter, re-requesting exactly the same batch, until
`give_up_after` seconds have passed without a successful call; then
TeacherUnavailable. A stream that made progress before it broke resumes at
its first batch not yet delivered, with a fresh give-up time.

The contract (docs/architecture.md, "The wire contract") is checked on every
answer and every transfer batch, term by term, against the terms
GetModelInfo gave at connection time: a contract_version newer than
CONTRACT_VERSION (UnsupportedContract); another teacher (any term of
TeacherIdentity, or teacher_hash) unless allow_teacher_change; a temperature,
class count, representation, dtype or top_k other than asked for; on the
stream, another transfer set (range, order scheme, fingerprint: never
allowed). All of these raise ContractChanged. Each transfer batch's
num_batches and example_ids must be the ones the order scheme gives for the
request (DataLoss otherwise); under an order scheme this client does not
know, num_batches must stay what the first batch said. A refused answer never
reaches the caller.

Credentials: TLS when tls_ca_file is set (mutual TLS with a client
certificate and key), a bearer token on every call (only over TLS: a token is
refused on a plaintext channel). Refused credentials are not retried:
UNAUTHENTICATED / PERMISSION_DENIED and a TLS handshake failure raise
CredentialsRefused at once, and so does a teacher that closes the connection
3 times in a row before it ever answered this client (a client certificate
refused under mutual TLS, or a plaintext client at a TLS port).

Thread-safety: every method may be called from several threads.
"""

import logging
import os
import random
import threading
import time
from typing import Callable, Iterator, List, NamedTuple, Optional, Sequence, Union

import grpc
import grpc.experimental  # ChannelOptions.SingleThreadedUnaryStream
import numpy as np

from ._proto import teacher_pb2 as pb
from ._proto import teacher_pb2_grpc as pb_grpc
from .codec import (decode_targets, field_spans, packed_float_values, span_of, varint_encoding,
                    varint_of)
from .errors import (BadRequest, ContractChanged, CredentialsRefused, DataLoss, DistilleryError,
                     TeacherUnavailable, UnsupportedContract, error_for)
from .order import ORDER_SCHEME, shard_example_ids

_log = logging.getLogger("distillery_client")

#: The contract version this client speaks (common/formats/contract.h).
CONTRACT_VERSION = 2
#: The teacher's mark on a RESOURCE_EXHAUSTED worth retrying
#: (common/util/transient_marker.h).
TRANSIENT_MARKER = "[transient] "
#: The environment variable a bearer token is read from without a file.
AUTH_TOKEN_ENV = "DISTILLERY_AUTH_TOKEN"

_CLOSED_CONNECTIONS_BEFORE_GIVING_UP = 3
_RETRYABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
              grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED}

Representation = str  # "probabilities" or "logits"
DType = str  # "float32" or "float16"


def is_retryable(code: grpc.StatusCode, details: str) -> bool:
    """Whether the client retries a call that ended with (code, details)."""
    if code in _RETRYABLE:
        return True
    # Only the teacher's overload answers; a message over the size limit
    # (gRPC's own answer, unmarked) fails the same way every time.
    return code == grpc.StatusCode.RESOURCE_EXHAUSTED and details.startswith(TRANSIENT_MARKER)


def _looks_like_tls_failure(code: grpc.StatusCode, details: str) -> bool:
    # gRPC reports a failed TLS handshake as UNAVAILABLE, like a teacher that
    # is down; its message is the only way to tell them apart.
    if code != grpc.StatusCode.UNAVAILABLE:
        return False
    return any(n in details for n in ("andshake", "SSL", "ssl", "CERTIFICATE", "certificate",
                                      "TLS"))


def read_bearer_token(path: Optional[str] = None, env_var: str = AUTH_TOKEN_ENV) -> str:
    """A bearer token from `path` when given (trailing newlines and carriage
    returns stripped), else from $DISTILLERY_AUTH_TOKEN, else "" (none).
    BadRequest for a configured but empty token or one with bytes outside
    printable ASCII; the token itself is never part of a message."""
    if path:
        try:
            with open(path, "rb") as f:
                raw = f.read()
        except OSError as e:
            raise BadRequest(f"auth_token_file: cannot read {path}: {e.strerror}") from e
        source = f"the token file {path}"
        token = raw.decode("latin-1")
    elif env_var in os.environ:
        token = os.environ[env_var]
        source = f"${env_var}"
    else:
        return ""
    token = token.rstrip("\r\n")
    if not token:
        raise BadRequest(f"{source} holds an empty token")
    if any(not 0x21 <= ord(c) <= 0x7E for c in token):
        raise BadRequest(f"{source} holds a byte that is not printable ASCII (a space or "
                         "control character?)")
    return token


def _f32(x: float) -> np.float32:
    return np.float32(x)


def _floats_bits(values: Sequence[float]) -> bytes:
    return np.asarray(list(values), dtype=np.float32).tobytes()


def _input_key(spec: "pb.InputSpec"):
    return (spec.channels, spec.rows, spec.cols, _floats_bits([spec.scale]),
            _floats_bits(spec.mean), _floats_bits(spec.std))


def _describe_input(spec: "pb.InputSpec") -> str:
    def floats(v):
        return "[" + ",".join(f"{float(_f32(x)):g}" for x in v) + "]"
    return (f"{spec.channels}x{spec.rows}x{spec.cols} scale {float(_f32(spec.scale)):g} "
            f"mean {floats(spec.mean)} std {floats(spec.std)}")


def _precision(p: int) -> int:
    return pb.PRECISION_F32 if p == pb.PRECISION_UNSPECIFIED else p


def _differs(term: str, got: str, expected: str) -> str:
    return f"{term} {got} differs from {expected}, the one this student trains on"


def compare_teacher_identity(expected: "pb.TeacherIdentity",
                             got: "pb.TeacherIdentity") -> Optional[str]:
    """None when equal; else the first term that differs (contract.cc's
    CompareTeacherIdentity)."""
    if got.weights_hash != expected.weights_hash:
        return _differs("weights_hash", got.weights_hash, expected.weights_hash)
    if got.architecture != expected.architecture:
        return _differs("architecture", got.architecture, expected.architecture)
    if _input_key(got.input) != _input_key(expected.input):
        return _differs("input", _describe_input(got.input), _describe_input(expected.input))
    if _precision(got.precision) != _precision(expected.precision):
        return _differs("precision", pb.Precision.Name(_precision(got.precision)),
                        pb.Precision.Name(_precision(expected.precision)))
    if got.ensemble_rule != expected.ensemble_rule:
        return _differs("ensemble_rule", f'"{got.ensemble_rule}"', f'"{expected.ensemble_rule}"')
    if len(got.members) != len(expected.members):
        return _differs("ensemble of", f"{len(got.members)} members", str(len(expected.members)))
    for i, (g, e) in enumerate(zip(got.members, expected.members)):
        if g.SerializeToString(deterministic=True) != e.SerializeToString(deterministic=True):
            return _differs(f"ensemble member {i}", g.teacher_hash, e.teacher_hash)
    return None


def _range(s: "pb.TransferSetIdentity") -> str:
    return f"[{s.range_begin},{s.range_end})"


def compare_transfer_set(expected: "pb.TransferSetIdentity",
                         got: "pb.TransferSetIdentity") -> Optional[str]:
    """None when equal; else the term that differs (contract.cc's
    CompareTransferSet)."""
    if got.range_begin != expected.range_begin or got.range_end != expected.range_end:
        return _differs("transfer set range", _range(got), _range(expected))
    if got.order_scheme != expected.order_scheme:
        return _differs("transfer set order scheme", f'"{got.order_scheme}"',
                        f'"{expected.order_scheme}"')
    if got.fingerprint != expected.fingerprint:
        return _differs(f"transfer set {_range(got)} fingerprint", got.fingerprint,
                        expected.fingerprint)
    return None


def _weights_hash(contract: "pb.SoftTargetContract") -> str:
    return contract.teacher.weights_hash if contract.contract_version >= 2 else contract.teacher_hash


def _check_version(version: int) -> None:
    if version > CONTRACT_VERSION:
        raise UnsupportedContract(f"the teacher speaks contract version {version}, newer than "
                                  f"this student knows ({CONTRACT_VERSION}): upgrade the student")


class TransferBatch(NamedTuple):
    """One batch of a transfer-set shard, decoded."""

    #: Position of the batch in the shard.
    batch_index: int
    #: Raw pixels, uint8, (rows, channels, image_rows, image_cols).
    pixels: np.ndarray
    #: Probabilities softmax(z/T), float32, (rows, num_classes).
    targets: np.ndarray
    #: Indices of the examples in the teacher's transfer set, uint64.
    example_ids: np.ndarray
    #: Labels, uint8 (rows,), when asked for; else None.
    labels: Optional[np.ndarray]


class _RawCalls(NamedTuple):
    get_soft_targets: grpc.UnaryUnaryMultiCallable
    stream_transfer_set: grpc.UnaryStreamMultiCallable


class _Retrier:
    """One call's retry state: WithRetries of teacher_client.cc, unrolled so
    that a generator can yield between attempts."""

    def __init__(self, client: "TeacherClient", what: str):
        self._client = client
        self._what = what
        self._backoff = client._initial_backoff
        self._give_up = time.monotonic() + client._give_up_after
        self._rng = random.Random()
        self._retried = False
        self._closed_before_answer = 0
        self.index = client._next_stub % len(client._stubs)

    @property
    def stub(self) -> "pb_grpc.TeacherStub":
        return self._client._stubs[self.index]

    @property
    def raw(self) -> _RawCalls:
        return self._client._raw[self.index]

    def succeeded(self) -> None:
        self._client._ever_answered = True
        if self._retried:
            with self._client._lock:
                self._client._retries += 1

    def failed(self, error: grpc.RpcError, progressed: bool = False) -> None:
        """Sleeps and moves to the next replica when the failure is worth
        retrying; raises the named exception otherwise."""
        client = self._client
        code, details = error.code(), error.details() or ""
        if code != grpc.StatusCode.UNAVAILABLE:
            client._ever_answered = True
        replica = "a teacher replica" if len(client._stubs) > 1 else client.target
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            raise CredentialsRefused(f"{replica} refused {self._what}: {details}", code) from error
        hint = (" (is the teacher serving TLS? then pass tls_ca_file)" if not client._tls else
                " (check that tls_ca_file signed the teacher's certificate, tls_server_name, and "
                "for mutual TLS that tls_cert_file and tls_key_file hold a certificate the "
                "teacher's CA signed)")
        if _looks_like_tls_failure(code, details):
            raise CredentialsRefused(f"TLS handshake with {replica} failed ({self._what}): "
                                     f"{details}{hint}", code) from error
        # A teacher that closes every connection right after it is opened,
        # before this client ever got an answer, refuses the handshake.
        if not client._ever_answered and "Socket closed" in details:
            self._closed_before_answer += 1
            if self._closed_before_answer >= _CLOSED_CONNECTIONS_BEFORE_GIVING_UP:
                raise CredentialsRefused(
                    f"{replica} closed the connection {self._closed_before_answer} times without "
                    f"answering {self._what}: it refuses this client's TLS handshake{hint}; "
                    f"last error: {details}", code) from error
        else:
            self._closed_before_answer = 0
        if not is_retryable(code, details):
            raise error_for(code, details) from error
        if progressed:
            self._give_up = time.monotonic() + client._give_up_after
            self._backoff = client._initial_backoff
        if time.monotonic() + self._backoff > self._give_up:
            raise TeacherUnavailable(
                f"no teacher answered {self._what} for {client._give_up_after:g}s "
                f"({client.target}); last error: {details}", code) from error
        _log.warning("%s failed (%s: %s); retrying in %.3fs%s", self._what, code.name, details,
                     self._backoff, " on another replica" if len(client._stubs) > 1 else "")
        # Full jitter keeps many students from retrying in lockstep.
        time.sleep(self._backoff * (0.5 + 0.5 * self._rng.randrange(1000) / 1000.0))
        self._backoff = min(self._backoff * 2, client._max_backoff)
        self._retried = True
        with client._lock:
            client._next_stub += 1
            self.index = client._next_stub % len(client._stubs)


class TeacherClient:
    """A connection to a teacher (or several replicas of one).

    Connecting fetches ModelInfo (with the retry policy); the terms it gives
    are the ones every later answer is held to.

    Args:
      target: comma-separated replicas ("10.0.0.5:50051,10.0.0.6:50051"), or
        one gRPC target such as "dns:///teacher:50051", resolved to all its
        addresses and balanced with round_robin.
      call_deadline: seconds, each unary call.
      stream_deadline: seconds, each whole transfer-set stream.
      give_up_after: stop retrying once no call succeeded for this long.
      initial_backoff, max_backoff: seconds between retries (doubling).
      allow_teacher_change: accept answers from a teacher whose identity
        differs from the first one (warn and adopt it) instead of raising
        ContractChanged.
      max_message_bytes: largest gRPC message sent or received.
      tls_ca_file: PEM CA certificates that signed the teacher's
        certificate: TLS. None: plaintext.
      tls_cert_file, tls_key_file: PEM client certificate chain and key, for
        a teacher with mutual TLS.
      tls_server_name: the name the teacher's certificate must carry when it
        is not the target's host.
      auth_token: the bearer token itself; without it, read from
        auth_token_file, else $DISTILLERY_AUTH_TOKEN (read_bearer_token).
    """

    def __init__(self, target: str = "127.0.0.1:50051", *, call_deadline: float = 30.0,
                 stream_deadline: float = 1800.0, give_up_after: float = 120.0,
                 initial_backoff: float = 0.1, max_backoff: float = 5.0,
                 allow_teacher_change: bool = False, max_message_bytes: int = 64 << 20,
                 tls_ca_file: Optional[str] = None, tls_cert_file: Optional[str] = None,
                 tls_key_file: Optional[str] = None, tls_server_name: Optional[str] = None,
                 auth_token: Optional[str] = None, auth_token_file: Optional[str] = None):
        self.target = target
        self._call_deadline = call_deadline
        self._stream_deadline = stream_deadline
        self._give_up_after = give_up_after
        self._initial_backoff = initial_backoff
        self._max_backoff = max_backoff
        self._allow_teacher_change = allow_teacher_change
        self._tls = bool(tls_ca_file)
        self._lock = threading.Lock()
        self._next_stub = 0
        self._retries = 0
        self._ever_answered = False
        self._channels: List[grpc.Channel] = []
        self._stubs: List[pb_grpc.TeacherStub] = []
        self._raw: List[_RawCalls] = []
        self._order_cache: dict = {}

        token = auth_token if auth_token is not None else read_bearer_token(auth_token_file)
        if not self._tls and (tls_cert_file or tls_key_file or tls_server_name):
            raise BadRequest("tls_cert_file, tls_key_file and tls_server_name need tls_ca_file "
                             "(TLS)")
        if not self._tls and token:
            raise BadRequest("a bearer token is configured but the channel is plaintext, where "
                             "anyone on the network could read it: pass tls_ca_file (or unset "
                             "the token)")
        if bool(tls_cert_file) != bool(tls_key_file):
            raise BadRequest("tls_cert_file and tls_key_file go together")
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.lb_policy_name", "round_robin"),
                   ("grpc.keepalive_time_ms", 30000),
                   ("grpc.keepalive_timeout_ms", 10000),
                   # Reconnect quickly after a teacher restarts.
                   ("grpc.max_reconnect_backoff_ms", 1000),
                   ("grpc.initial_reconnect_backoff_ms", 100),
                   # A stream's messages are read on the iterating thread, not
                   # handed over from gRPC's channel thread (under the GIL).
                   (grpc.experimental.ChannelOptions.SingleThreadedUnaryStream, 1)]
        credentials = None
        if self._tls:
            def read(path, what):
                try:
                    with open(path, "rb") as f:
                        return f.read()
                except OSError as e:
                    raise BadRequest(f"{what}: cannot read {path}: {e.strerror}") from e
            credentials = grpc.ssl_channel_credentials(
                root_certificates=read(tls_ca_file, "tls_ca_file"),
                private_key=read(tls_key_file, "tls_key_file") if tls_key_file else None,
                certificate_chain=read(tls_cert_file, "tls_cert_file") if tls_cert_file else None)
            if tls_server_name:
                options.append(("grpc.ssl_target_name_override", tls_server_name))
        for replica in (r.strip() for r in target.split(",")):
            if not replica:
                continue
            channel = (grpc.secure_channel(replica, credentials, options) if credentials
                       else grpc.insecure_channel(replica, options))
            self._channels.append(channel)
            self._stubs.append(pb_grpc.TeacherStub(channel))
            # The same two calls, answering raw bytes: the targets' floats
            # are read from them directly (codec.packed_float_values).
            self._raw.append(_RawCalls(
                channel.unary_unary("/distill.v1.Teacher/GetSoftTargets",
                                    request_serializer=pb.SoftTargetsRequest.SerializeToString),
                channel.unary_stream("/distill.v1.Teacher/StreamTransferSet",
                                     request_serializer=pb.TransferSetRequest.SerializeToString)))
        if not self._stubs:
            raise BadRequest("no teacher address given")
        try:
            info = self._unary("GetModelInfo", lambda stub: stub.GetModelInfo(
                pb.GetModelInfoRequest(), timeout=10.0, metadata=self._metadata))
            _check_version(info.contract.contract_version)
        except BaseException:
            self.close()
            raise
        self._info = info
        self._expected = pb.SoftTargetContract()
        self._expected.CopyFrom(info.contract)
        self._expected.teacher_hash = info.teacher_hash

    # -- lifetime ------------------------------------------------------------

    def close(self) -> None:
        """Closes the channels (calls in flight are cancelled)."""
        for channel in self._channels:
            channel.close()
        self._channels = []

    def __enter__(self) -> "TeacherClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- what the teacher is -------------------------------------------------

    @property
    def info(self) -> "pb.ModelInfo":
        """The ModelInfo read at connection time."""
        return self._info

    @property
    def example_shape(self):
        """One example's (channels, rows, cols); 1 channel for a release-1 teacher."""
        return (self._info.image_channels or 1, self._info.image_rows, self._info.image_cols)

    @property
    def input_size(self) -> int:
        c, h, w = self.example_shape
        return c * h * w

    @property
    def num_classes(self) -> int:
        return self._info.num_classes

    @property
    def max_batch_size(self) -> int:
        return self._info.max_batch_size

    @property
    def retries(self) -> int:
        """Successful calls after at least one retry (for tests and logs)."""
        return self._retries

    # -- retries -------------------------------------------------------------

    def _unary(self, what: str, call: Callable[["pb_grpc.TeacherStub"], object]):
        return self._retried(what, lambda retrier: call(retrier.stub))

    def _unary_raw(self, what: str, call: Callable[[_RawCalls], bytes]) -> bytes:
        return self._retried(what, lambda retrier: call(retrier.raw))

    def _retried(self, what: str, attempt: Callable[["_Retrier"], object]):
        """attempt(retrier) until it answers, retrying failures as _Retrier decides."""
        retrier = _Retrier(self, what)
        while True:
            try:
                answer = attempt(retrier)
            except grpc.RpcError as e:
                retrier.failed(e)
                continue
            retrier.succeeded()
            return answer

    # -- contract ------------------------------------------------------------

    def _check_contract(self, contract: "pb.SoftTargetContract", temperature: np.float32,
                        asked: "pb.TargetOptions", stream: bool) -> None:
        _check_version(contract.contract_version)
        with self._lock:
            expected = self._expected
            both_v2 = contract.contract_version >= 2 and expected.contract_version >= 2
            if both_v2:
                differs = compare_teacher_identity(expected.teacher, contract.teacher)
                if differs is None and contract.teacher_hash != expected.teacher_hash:
                    differs = (f"teacher_hash {contract.teacher_hash} differs from "
                               f"{expected.teacher_hash}")
            elif (contract.teacher_hash != expected.teacher_hash
                  if contract.contract_version == expected.contract_version
                  else _weights_hash(contract) != _weights_hash(expected)):
                differs = (f"its hash is now {contract.teacher_hash}, it was "
                           f"{expected.teacher_hash}")
            else:
                differs = None
            if differs is not None:
                if not self._allow_teacher_change:
                    raise ContractChanged(f"the teacher changed: {differs} (restart the student "
                                          "or pass allow_teacher_change=True)")
                _log.warning("the teacher changed (%s); continuing (allow_teacher_change)",
                             differs)
                expected.teacher_hash = contract.teacher_hash
                expected.contract_version = contract.contract_version
                expected.teacher.CopyFrom(contract.teacher)
            if stream and contract.contract_version >= 2:
                if not contract.HasField("transfer_set"):
                    raise ContractChanged("a transfer batch of a version-2 teacher names no "
                                          "transfer set")
                if not expected.HasField("transfer_set"):
                    expected.transfer_set.CopyFrom(contract.transfer_set)
                else:
                    differs = compare_transfer_set(expected.transfer_set, contract.transfer_set)
                    if differs is not None:
                        raise ContractChanged(
                            f"a teacher replica streams another transfer set: {differs}; "
                            "resuming on it would repeat or skip examples (give every replica "
                            "the same --data_dir and --transfer_range)")
            elif not stream and contract.HasField("transfer_set"):
                raise ContractChanged("the targets of the student's own inputs name a transfer "
                                      "set")
        if _f32(contract.temperature) != temperature:
            raise ContractChanged(f"asked for targets at T={float(temperature):g}, got "
                                  f"T={float(_f32(contract.temperature)):g}")
        if contract.num_classes != self._info.num_classes:
            raise ContractChanged(f"the teacher's class count changed: {contract.num_classes} "
                                  f"classes, it was {self._info.num_classes}")
        # The encoding asked for (unset enums are the defaults).
        want_repr = asked.representation or pb.PROBABILITIES
        want_dtype = asked.dtype or pb.FLOAT32
        want_top_k = 0 if asked.top_k == self._info.num_classes else asked.top_k
        if (contract.representation or pb.PROBABILITIES) != want_repr:
            raise ContractChanged(
                f"asked for {pb.Representation.Name(want_repr)}, got "
                f"{pb.Representation.Name(contract.representation)}")
        if (contract.dtype or pb.FLOAT32) != want_dtype:
            raise ContractChanged(f"asked for {pb.DType.Name(want_dtype)} targets, got "
                                  f"{pb.DType.Name(contract.dtype)}")
        if contract.top_k != want_top_k:
            raise ContractChanged(f"asked for top_k={want_top_k}, got top_k={contract.top_k}")

    # -- options -------------------------------------------------------------

    def _options(self, temperature: Optional[float], top_k: int, dtype: DType,
                 representation: Representation) -> "pb.TargetOptions":
        options = pb.TargetOptions()
        if temperature is not None:
            t = float(temperature)
            if not np.isfinite(t) or t <= 0:
                raise BadRequest(f"temperature must be a finite number > 0, not {temperature}")
            options.temperature = t
        if not 0 <= top_k <= self._info.num_classes:
            raise BadRequest(f"top_k {top_k} is not in [0, {self._info.num_classes}]")
        options.top_k = top_k
        dtypes = {"float32": pb.FLOAT32, "f32": pb.FLOAT32, "float16": pb.FLOAT16,
                  "f16": pb.FLOAT16}
        key = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
        if key not in dtypes:
            raise BadRequest(f"dtype must be float32 or float16, not {dtype!r}")
        options.dtype = dtypes[key]
        representations = {"probabilities": pb.PROBABILITIES, "logits": pb.LOGITS}
        if representation not in representations:
            raise BadRequest(f"representation must be 'probabilities' or 'logits', not "
                             f"{representation!r}")
        options.representation = representations[representation]
        return options

    def _temperature(self, options: "pb.TargetOptions") -> np.float32:
        return _f32(options.temperature if options.HasField("temperature")
                    else self._info.default_temperature)

    # -- soft targets of the student's inputs --------------------------------

    def soft_targets(self, pixels: np.ndarray, temperature: Optional[float] = None, top_k: int = 0,
                     dtype: DType = "float32",
                     representation: Representation = "probabilities") -> np.ndarray:
        """Soft targets of the student's own images.

        Args:
          pixels: raw uint8 pixels, any number of examples: shape (n, C, H, W),
            (n, H, W) for one channel, (n, C*H*W), or (C*H*W,) for one image.
            Split into requests of at most the teacher's max_batch_size.
          temperature: T of softmax(z/T); None: the teacher's default.
          top_k: send only each row's k largest values (0: all), decoded here
            as common/formats/target_codec.cc does.
          dtype: "float32" or "float16" on the wire.
          representation: "probabilities" or "logits" on the wire.

        Returns:
          float32 probabilities, (n, num_classes), at T.
        """
        array = np.asarray(pixels)
        if array.dtype != np.uint8:
            raise BadRequest(f"pixels must be uint8 (raw 0..255), not {array.dtype}")
        width = self.input_size
        if (array.ndim < 2 or int(np.prod(array.shape[1:])) != width) and array.size == width:
            array = array.reshape(1, width)  # one example: (C*H*W,), (H, W), (C, H, W)
        if array.ndim < 2 or int(np.prod(array.shape[1:])) != width:
            raise BadRequest(f"pixels of shape {array.shape}: each example must hold {width} "
                             f"values {self.example_shape}")
        rows = array.shape[0]
        options = self._options(temperature, top_k, dtype, representation)
        t = self._temperature(options)
        flat = np.ascontiguousarray(array.reshape(rows, width))
        out = np.empty((rows, self._info.num_classes), dtype=np.float32)
        step = max(1, self._info.max_batch_size)
        for begin in range(0, rows, step):
            chunk = flat[begin:begin + step]
            request = pb.SoftTargetsRequest(num_examples=len(chunk), pixels_u8=chunk.tobytes(),
                                            options=options)
            raw = self._unary_raw("GetSoftTargets", lambda calls: calls.get_soft_targets(
                request, timeout=self._call_deadline, metadata=self._metadata))
            response = pb.SoftTargetsResponse.FromString(raw)
            self._check_contract(response.contract, t, options, stream=False)
            if response.targets.num_examples != len(chunk):
                raise DataLoss(f"asked for {len(chunk)} rows of targets, got "
                               f"{response.targets.num_examples}")
            out[begin:begin + len(chunk)] = decode_targets(
                response.targets, response.contract, packed_float_values(raw, 2))
        return out

    # -- the transfer set ----------------------------------------------------

    def shard_size(self, shard_index: int, num_shards: int) -> int:
        """Examples in shard `shard_index` of `num_shards`."""
        size = self._info.transfer_set_size
        return (size - shard_index + num_shards - 1) // num_shards

    def num_batches(self, shard_index: int, num_shards: int, batch_size: int) -> int:
        """Batches per epoch of a shard."""
        return (self.shard_size(shard_index, num_shards) + batch_size - 1) // batch_size

    def _expected_ids(self, epoch: int, seed: int, shard: int, num_shards: int):
        with self._lock:
            if self._expected.HasField("transfer_set"):
                scheme = self._expected.transfer_set.order_scheme
                size = self._expected.transfer_set.range_end - self._expected.transfer_set.range_begin
            elif self._expected.contract_version < 2:
                scheme, size = ORDER_SCHEME, self._info.transfer_set_size
            else:
                scheme, size = "", self._info.transfer_set_size
        if scheme != ORDER_SCHEME:
            _log.warning('the teacher\'s order scheme "%s" is unknown to this student: example '
                         "ids are not checked, only the batch count", scheme)
            return None
        key = (size, epoch, seed, shard, num_shards)
        order = self._order_cache.get(key)
        if order is None:
            try:
                ids = shard_example_ids(size, epoch, seed, shard, num_shards)
            except ValueError as e:
                raise BadRequest(str(e)) from e
            # The ids as a serializer packs them: a batch whose packed
            # example_ids are these bytes holds exactly these ids.
            order = (ids,) + varint_encoding(ids)
            self._order_cache = {key: order}  # one epoch at a time
        return order

    def transfer_set(self, epoch: int, seed: int = 1, shard_index: int = 0, num_shards: int = 1,
                     batch_size: int = 128, temperature: Optional[float] = None, *,
                     top_k: int = 0, dtype: DType = "float32",
                     representation: Representation = "probabilities",
                     include_labels: bool = False,
                     start_batch: int = 0) -> Iterator[TransferBatch]:
        """The batches [start_batch, end) of one shard of one epoch of the
        teacher's transfer set, decoded, in order.

        A broken stream (a teacher killed, restarted, drained, or a replica
        down) is re-requested from its first batch not yet yielded, on the
        next replica, so that no batch is lost or repeated; the order scheme
        fixes every batch's example ids, and they are checked.

        Raises BadRequest at once (before any call) for a shard that does not
        exist, a batch size over the teacher's max_batch_size, or labels the
        teacher does not have.
        """
        info = self._info
        if info.transfer_set_size == 0:
            raise BadRequest("the teacher serves no transfer set")
        if num_shards < 1 or not 0 <= shard_index < num_shards or num_shards > info.transfer_set_size:
            raise BadRequest(f"shard {shard_index} of {num_shards} does not exist")
        if not 1 <= batch_size <= info.max_batch_size:
            raise BadRequest(f"batch size must be in [1, {info.max_batch_size}]")
        if include_labels and not info.transfer_set_has_labels:
            raise BadRequest("labels asked for, but the teacher's transfer set has none")
        if epoch < 0 or seed < 0 or start_batch < 0:
            raise BadRequest("epoch, seed and start_batch must be >= 0")
        options = self._options(temperature, top_k, dtype, representation)
        return self._stream(pb.TransferSetRequest(
            epoch=epoch, seed=seed, shard_index=shard_index, num_shards=num_shards,
            batch_size=batch_size, start_batch=start_batch, include_labels=include_labels,
            options=options))

    def _stream(self, request: "pb.TransferSetRequest") -> Iterator[TransferBatch]:
        t = self._temperature(request.options)
        expected_ids: Optional[np.ndarray] = None
        expected_packed = expected_offsets = None
        ids_known = False
        seen_num_batches = 0
        shape = self.example_shape
        width = self.input_size
        next_batch = request.start_batch
        accepted_contract = accepted = None
        retrier = _Retrier(self, "StreamTransferSet")
        while True:
            attempt_start = next_batch
            request.start_batch = next_batch
            call = retrier.raw.stream_transfer_set(request, timeout=self._stream_deadline,
                                                   metadata=self._metadata)
            try:
                received = iter(call)
                if not ids_known:
                    # The shard's ids (~11 ms of NumPy for 60000 examples),
                    # computed once the call is under way, so that the
                    # teacher fills the stream's window meanwhile. (On
                    # another thread they held the GIL that this one needed
                    # for each batch taken off the wire: slower.)
                    order = self._expected_ids(request.epoch, request.seed,
                                               request.shard_index, request.num_shards)
                    if order is not None:
                        expected_ids, expected_packed, expected_offsets = order
                        num_batches = (len(expected_ids) + request.batch_size - 1) // request.batch_size
                    ids_known = True
                for raw in received:
                    # Where the fields lie in the answer's bytes (None: a field
                    # repeated, which only the parser resolves).
                    spans = field_spans(raw)
                    message = None
                    batch_index, num_batches_sent = varint_of(spans, 2), varint_of(spans, 3)
                    contract_span, targets_span = span_of(spans, 1), span_of(spans, 6)
                    labels_span = (span_of(spans, 7) if spans is None or 7 in spans
                                   else (0, 0))  # absent: empty
                    # The usual answer is read from its bytes alone; any other
                    # (unknown, repeated or missing fields, an unknown order
                    # scheme) is parsed in full.
                    if (expected_ids is None or batch_index is None or num_batches_sent is None
                            or contract_span is None or targets_span is None
                            or labels_span is None or span_of(spans, 5) is None
                            or not _TRANSFER_BATCH_FIELDS.issuperset(spans)):
                        message = pb.TransferBatch.FromString(raw)
                        batch_index, num_batches_sent = message.batch_index, message.num_batches
                    if batch_index != next_batch:
                        raise DataLoss(f"expected batch {next_batch}, got {batch_index}")
                    # Answers of one stream carry the same terms: each batch's are
                    # checked in full unless they are the bytes already accepted
                    # (equal bytes parse to an equal message).
                    contract_bytes = (raw[contract_span[0]:contract_span[1]]
                                      if contract_span is not None
                                      else message.contract.SerializeToString())
                    if contract_bytes != accepted_contract or self._allow_teacher_change:
                        contract = (message.contract if message is not None else
                                    pb.SoftTargetContract.FromString(contract_bytes))
                        self._check_contract(contract, t, request.options, stream=True)
                        accepted_contract, accepted = contract_bytes, contract
                    else:
                        contract = accepted
                    if expected_ids is None:
                        if seen_num_batches == 0:
                            seen_num_batches = message.num_batches
                        if message.num_batches != seen_num_batches:
                            raise DataLoss(f"transfer batch {message.batch_index} says the shard "
                                           f"has {message.num_batches} batches; earlier batches "
                                           f"said {seen_num_batches}")
                        ids = np.array(message.example_ids, dtype=np.uint64)
                    else:
                        # The order scheme's ids packed as a serializer packs
                        # them: equal bytes are equal ids, without decoding.
                        begin = next_batch * request.batch_size
                        end = min(len(expected_ids), begin + request.batch_size)
                        span = span_of(spans, 4)
                        if (num_batches_sent == num_batches and begin < end
                                and span is not None
                                and raw[span[0]:span[1]] == expected_packed[
                                    expected_offsets[begin]:expected_offsets[end]]):
                            ids = expected_ids[begin:end].copy()
                        else:
                            if message is None:
                                message = pb.TransferBatch.FromString(raw)
                            ids = np.array(message.example_ids, dtype=np.uint64)
                            _check_batch_place(request, expected_ids, message, ids)
                    rows = len(ids)
                    span = span_of(spans, 5)
                    pixel_bytes = (span[1] - span[0] if span is not None
                                   else len(message.pixels_u8))
                    label_bytes = 0
                    if request.include_labels:
                        label_bytes = (labels_span[1] - labels_span[0] if labels_span is not None
                                       else len(message.labels))
                    if rows < 1 or pixel_bytes != rows * width or (
                            request.include_labels and label_bytes != rows):
                        raise DataLoss(f"transfer batch {batch_index} is malformed")
                    # Views of the answer's bytes (read-only, like frombuffer
                    # of the bytes fields), not copies.
                    pixels = (np.frombuffer(raw, np.uint8, pixel_bytes, span[0])
                              if span is not None else
                              np.frombuffer(message.pixels_u8, dtype=np.uint8)).reshape(
                                  (rows,) + tuple(shape))
                    labels = None
                    if request.include_labels:
                        labels = (np.frombuffer(raw, np.uint8, rows, labels_span[0])
                                  if labels_span is not None else
                                  np.frombuffer(message.labels, dtype=np.uint8))
                    targets_message = (message.targets if message is not None else
                                       pb.Targets.FromString(raw[targets_span[0]:targets_span[1]]))
                    targets = decode_targets(targets_message, contract,
                                             packed_float_values(raw, 6, spans))
                    if targets.shape[0] != rows:
                        raise DataLoss(f"transfer batch {batch_index} has "
                                       f"{targets.shape[0]} rows of targets for {rows} examples")
                    next_batch += 1
                    yield TransferBatch(batch_index, pixels, targets, ids, labels)
                retrier.succeeded()
                return
            except grpc.RpcError as e:
                retrier.failed(e, progressed=next_batch > attempt_start)
            finally:
                call.cancel()


#: TransferBatch's field numbers (teacher.proto).
_TRANSFER_BATCH_FIELDS = frozenset(range(1, 8))


def _check_batch_place(request: "pb.TransferSetRequest", expected_ids: np.ndarray,
                       batch: "pb.TransferBatch", ids: np.ndarray) -> None:
    """A transfer batch's num_batches and example ids against the order scheme."""
    b = batch.batch_index
    size = request.batch_size
    num_batches = (len(expected_ids) + size - 1) // size
    if batch.num_batches != num_batches:
        raise DataLoss(f"transfer batch {b} says the shard has {batch.num_batches} batches; its "
                       f"order scheme gives {num_batches}")
    begin = b * size
    end = min(len(expected_ids), begin + size)
    if begin >= end or len(ids) != end - begin:
        raise DataLoss(f"transfer batch {b} holds {len(ids)} examples, not "
                       f"{end - begin if end > begin else 0}")
    want = expected_ids[begin:end]
    if not np.array_equal(ids, want):
        i = int(np.nonzero(ids != want)[0][0])
        raise DataLoss(f"transfer batch {b} of epoch {request.epoch}, shard "
                       f"{request.shard_index}/{request.num_shards}: example {i} is id "
                       f"{int(ids[i])}, the order scheme gives {int(want[i])}")
