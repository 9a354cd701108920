"""Decoding of distill.v1.Targets into NumPy probability rows.

The same rules, and for probabilities the same float32 bits, as
common/formats/target_codec.cc's DecodeTargets:
  * FLOAT16 values are little-endian IEEE binary16 (exact in float32);
  * a top-k row of probabilities keeps its k values and spreads the mass
    1 - sum (summed in double, in order) evenly over the other classes;
  * a top-k row of logits gives the missing classes the smallest logit
    sent; logits then go through softmax(z / T). (The C++ student computes
    that softmax with oneDNN; here it is computed in float64 and rounded to
    float32, so LOGITS rows agree to float rounding, not bit for bit.)
Inconsistent blocks (sizes, class indices, non-finite or negative values)
raise DataLoss.
"""

from typing import Optional

import numpy as np

from ._proto import teacher_pb2 as pb
from .errors import DataLoss


def _varint(buf: bytes, pos: int):
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7


def _length_delimited(buf: bytes, begin: int, end: int, number: int):
    """(begin, end) of the first length-delimited field `number` in
    buf[begin:end] (protobuf wire format), or None."""
    pos = begin
    while pos < end:
        key, pos = _varint(buf, pos)
        wire_type = key & 7
        if wire_type == 0:
            _, pos = _varint(buf, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            if key >> 3 == number:
                return pos, pos + length
            pos += length
        else:
            return None
    return None


def packed_float_values(raw: bytes, targets_field: int) -> Optional[memoryview]:
    """The bytes of Targets.values (packed float, field 3) inside a
    serialized message whose field `targets_field` is the Targets, or None
    when they are not one packed run. Copying the floats out of the bytes is
    ~20x faster than iterating the repeated field; the caller checks that
    their count is len(targets.values)."""
    targets = _length_delimited(raw, 0, len(raw), targets_field)
    if targets is None:
        return None
    values = _length_delimited(raw, targets[0], targets[1], 3)
    if values is None:
        return None
    return memoryview(raw)[values[0]:values[1]]


def decode_targets(targets: "pb.Targets", contract: "pb.SoftTargetContract",
                   packed_values: Optional[memoryview] = None) -> np.ndarray:
    """Full probability rows (num_examples x num_classes, float32) at the
    contract's temperature. `packed_values`: the bytes of targets.values as
    sent (packed_float_values), a faster source of the same floats."""
    rows = targets.num_examples
    classes = contract.num_classes
    width = targets.width
    expected_width = contract.top_k if contract.top_k > 0 else classes
    if classes < 1 or width != expected_width:
        raise DataLoss(f"targets are {width} wide, the contract says {expected_width}")
    count = rows * width
    if contract.dtype == pb.FLOAT16:
        raw = targets.values_f16
        if len(raw) != 2 * count:
            raise DataLoss(f"expected {count} fp16 targets ({rows} rows of {width}), got "
                           f"{len(raw)} bytes")
        values = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        if len(targets.values) != count:
            raise DataLoss(f"expected {count} target values ({rows} rows of {width}), got "
                           f"{len(targets.values)}")
        if packed_values is not None and len(packed_values) == 4 * count:
            values = np.frombuffer(packed_values, dtype="<f4").astype(np.float32)
        else:
            values = np.array(targets.values, dtype=np.float32)
    values = values.reshape(rows, width)
    if not np.isfinite(values).all():
        raise DataLoss("targets hold a non-finite value")
    logits = contract.representation == pb.LOGITS
    if contract.top_k > 0:
        if len(targets.class_indices) != count:
            raise DataLoss("top-k targets without one class index per value")
        indices = np.array(targets.class_indices, dtype=np.int64).reshape(rows, width)
        if count and int(indices.max()) >= classes:
            bad = int(indices[indices >= classes][0])
            raise DataLoss(f"class index {bad} out of range")
        if logits:
            filler = values.min(axis=1) if width else np.zeros(rows, np.float32)
        elif classes > width:
            sent = np.zeros(rows, dtype=np.float64)
            for j in range(width):  # in order, as the C++ loop adds them
                sent += values[:, j]
            filler = (np.maximum(0.0, 1.0 - sent) / (classes - width)).astype(np.float32)
        else:
            filler = np.zeros(rows, dtype=np.float32)
        full = np.repeat(filler.astype(np.float32)[:, None], classes, axis=1)
        row_index = np.arange(rows)
        for j in range(width):  # column by column: a repeated class keeps the last value
            full[row_index, indices[:, j]] = values[:, j]
    else:
        full = values
    if logits:
        z = full.astype(np.float64) / np.float64(np.float32(contract.temperature))
        z -= z.max(axis=1, keepdims=True)
        e = np.exp(z)
        probabilities = (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        if not np.isfinite(probabilities).all():
            raise DataLoss("the logits sent give non-finite probabilities at "
                           f"T={contract.temperature}")
        return probabilities
    if (full < 0).any():
        raise DataLoss("negative probability in targets")
    return np.ascontiguousarray(full, dtype=np.float32)
