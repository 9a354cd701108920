"""The exceptions of distillery_client, named for what went wrong.

Every one is a DistilleryError carrying `code` (the grpc.StatusCode of the
failure: the teacher's, or the one the C++ student would report for a check
made here) and `details` (the message); when a gRPC call failed, the
grpc.RpcError is chained as __cause__.
"""

from typing import Optional

import grpc


class DistilleryError(Exception):
    """Base class: a failure talking to a teacher."""

    #: The status a failure of this class has when no other is known.
    default_code = grpc.StatusCode.UNKNOWN

    def __init__(self, details: str, code: Optional[grpc.StatusCode] = None):
        super().__init__(details)
        self.details = details
        self.code = code if code is not None else self.default_code

    def __str__(self) -> str:
        return f"{self.details} [{self.code.name}]"


class TeacherUnavailable(DistilleryError):
    """No teacher answered before the give-up time (UNAVAILABLE, retried)."""

    default_code = grpc.StatusCode.UNAVAILABLE


class CredentialsRefused(DistilleryError):
    """The teacher refused this client's credentials: a bad or missing bearer
    token (UNAUTHENTICATED / PERMISSION_DENIED), a failed TLS handshake, a
    plaintext client at a TLS port, or a client certificate refused under
    mutual TLS. Never retried: retrying does not mend a credential."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class ContractChanged(DistilleryError):
    """An answer's contract is not the one this client trains on: another
    teacher (a term of TeacherIdentity, or teacher_hash), temperature, class
    count, representation, or transfer set (FAILED_PRECONDITION). The answer
    is never returned."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class UnsupportedContract(ContractChanged):
    """The teacher speaks a contract version newer than this client knows."""


class BadRequest(DistilleryError, ValueError):
    """A request that can never succeed: refused here before sending (wrong
    pixel array, shard or batch size) or by the teacher (INVALID_ARGUMENT, a
    message over the size limit, ...)."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class DataLoss(DistilleryError):
    """An answer that is inconsistent: targets of the wrong size or with
    non-finite or negative values, a transfer batch out of order or whose
    example ids are not the ones the order scheme gives (DATA_LOSS)."""

    default_code = grpc.StatusCode.DATA_LOSS


class TeacherError(DistilleryError):
    """Any other non-retryable status from the teacher."""


_BY_CODE = {
    grpc.StatusCode.UNAVAILABLE: TeacherUnavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: TeacherUnavailable,
    grpc.StatusCode.UNAUTHENTICATED: CredentialsRefused,
    grpc.StatusCode.PERMISSION_DENIED: CredentialsRefused,
    grpc.StatusCode.FAILED_PRECONDITION: ContractChanged,
    grpc.StatusCode.INVALID_ARGUMENT: BadRequest,
    grpc.StatusCode.OUT_OF_RANGE: BadRequest,
    grpc.StatusCode.RESOURCE_EXHAUSTED: BadRequest,
    grpc.StatusCode.DATA_LOSS: DataLoss,
}


def error_for(code: grpc.StatusCode, details: str) -> DistilleryError:
    """The exception for a final (not retried) status."""
    return _BY_CODE.get(code, TeacherError)(details, code)
