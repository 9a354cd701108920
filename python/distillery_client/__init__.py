"""distillery_client: the Python student client of Distillery's teacher.

    from distillery_client import TeacherClient
    with TeacherClient("127.0.0.1:50051") as teacher:
        probs = teacher.soft_targets(images_uint8, temperature=20)
        for batch in teacher.transfer_set(epoch=0, seed=1, batch_size=128, temperature=20):
            batch.pixels, batch.targets, batch.example_ids

The distill.v1 stubs are generated from the repository's proto/ when the
package is built (setup.py). A PyTorch IterableDataset over the transfer set
is in distillery_client.torch (imported only on demand, since it needs torch).
"""

from .client import (AUTH_TOKEN_ENV, CONTRACT_VERSION, TeacherClient, TransferBatch,
                     compare_teacher_identity, compare_transfer_set, is_retryable,
                     read_bearer_token)
from .codec import decode_targets
from .errors import (BadRequest, ContractChanged, CredentialsRefused, DataLoss, DistilleryError,
                     TeacherError, TeacherUnavailable, UnsupportedContract)
from .order import ORDER_SCHEME, shard_example_ids, shuffled_indices

__all__ = [
    "AUTH_TOKEN_ENV", "BadRequest", "CONTRACT_VERSION", "ContractChanged", "CredentialsRefused",
    "DataLoss", "DistilleryError", "ORDER_SCHEME", "TeacherClient", "TeacherError",
    "TeacherUnavailable", "TransferBatch", "UnsupportedContract", "compare_teacher_identity",
    "compare_transfer_set", "decode_targets", "is_retryable", "read_bearer_token",
    "shard_example_ids", "shuffled_indices",
]
__version__ = "0.1.0"
