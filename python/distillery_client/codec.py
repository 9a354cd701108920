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


def field_spans(buf: bytes, begin: int = 0, end: Optional[int] = None) -> Optional[dict]:
    """The fields of the serialized message buf[begin:end] (protobuf wire
    format): {number: (begin, end) of its bytes} for a length-delimited
    field, {number: value} for a varint below 2**64, {number: None} for any
    other. None when a field number occurs
    twice (the parser would merge or overwrite: the caller then reads the
    parsed message instead), for a wire type it does not know, or for bytes
    that do not end where the message ends."""
    spans: dict = {}
    pos = begin
    end = len(buf) if end is None else end
    try:
        while pos < end:
            key = buf[pos]
            if key < 0x80:
                pos += 1
            else:
                key, pos = _varint(buf, pos)
            number = key >> 3
            if number in spans:
                return None
            wire_type = key & 7
            if wire_type == 2:
                length = buf[pos]
                if length < 0x80:
                    pos += 1
                else:
                    length, pos = _varint(buf, pos)
                spans[number] = (pos, pos + length)
                pos += length
            elif wire_type == 0:
                value = buf[pos]
                if value < 0x80:
                    pos += 1
                else:
                    value, pos = _varint(buf, pos)
                spans[number] = value if value >> 64 == 0 else None
            elif wire_type == 1:
                pos += 8
                spans[number] = None
            elif wire_type == 5:
                pos += 4
                spans[number] = None
            else:
                return None
    except IndexError:
        return None
    return spans if pos == end else None


def span_of(spans: Optional[dict], number: int):
    """(begin, end) of length-delimited field `number` in field_spans' answer, or None."""
    span = spans.get(number) if spans is not None else None
    return span if type(span) is tuple else None


def varint_of(spans: Optional[dict], number: int) -> Optional[int]:
    """Varint field `number` of field_spans' answer (0, the default, when
    absent), or None when it is not a varint."""
    if spans is None:
        return None
    value = spans.get(number, 0)
    return value if type(value) is int else None


def packed_float_values(raw: bytes, targets_field: int,
                        spans: Optional[dict] = None) -> Optional[memoryview]:
    """The bytes of Targets.values (packed float, field 3) inside a
    serialized message whose field `targets_field` is the Targets, or None
    when they are not one packed run. Copying the floats out of the bytes is
    ~20x faster than iterating the repeated field; the caller checks that
    their count is len(targets.values). `spans`: field_spans(raw), when
    already read."""
    if spans is None:
        spans = field_spans(raw)
    targets = span_of(spans, targets_field)
    if targets is None:
        return None
    values = span_of(field_spans(raw, targets[0], targets[1]), 3)
    if values is None:
        return None
    return memoryview(raw)[values[0]:values[1]]


def varint_encoding(values: np.ndarray):
    """(bytes, offsets): the canonical packed-varint encoding of the uint64
    `values` (what a protobuf serializer writes for a packed repeated
    uint64), and where each value's bytes begin (offsets[i]; offsets[n] is
    the end)."""
    v = np.asarray(values, dtype=np.uint64)
    n = len(v)
    longest = 1
    top = int(v.max()) if n else 0
    while top >> (7 * longest):
        longest += 1
    groups = np.empty((n, longest), dtype=np.uint8)
    lengths = np.ones(n, dtype=np.int64)
    x = v.copy()
    for k in range(longest):
        groups[:, k] = (x & np.uint64(0x7F)).astype(np.uint8)
        x >>= np.uint64(7)
        more = x > 0
        groups[:, k] |= more.astype(np.uint8) << np.uint8(7)
        lengths += more
    encoded = groups[np.arange(longest)[None, :] < lengths[:, None]].tobytes()
    offsets = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return encoded, offsets


#: The bits of float32 +inf.
_F32_INF_BITS = np.uint32(0x7F800000)


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
    logits = contract.representation == pb.LOGITS
    if not logits and contract.top_k == 0 and count:
        # The usual answer, full rows of probabilities, in one reduction: as
        # unsigned integers, the floats that are finite and not negative
        # (nor -0.0) are exactly those below the bits of +inf. Any other
        # row takes the checks below.
        if values.view(np.uint32).max() < _F32_INF_BITS:
            return values
    # Two reductions instead of a mask and its test: min and max are finite
    # only when every value is (a NaN makes both NaN).
    lowest = values.min() if count else np.float32(0)
    if count and not (-np.inf < lowest and values.max() < np.inf):
        raise DataLoss("targets hold a non-finite value")
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
    if (lowest if full is values else (full.min() if full.size else 0)) < 0:
        raise DataLoss("negative probability in targets")
    return np.ascontiguousarray(full, dtype=np.float32)
