"""A dependency-free reader for `.safetensors` files (HF transformers, timm).

The format is an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
shape and byte range, then the raw little-endian data. bfloat16 tensors (NumPy has no such
dtype) are widened to float32 exactly; everything else keeps its dtype.
"""

import json
import os
import struct

import numpy as np

_DTYPES = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
}


def read_safetensors(path):
    """Returns ({name: np.ndarray}, metadata dict) of a `.safetensors` file."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"{path} is not a safetensors file (shorter than 8 bytes).")
        (length,) = struct.unpack("<Q", head)
        if length > size - 8 or length > 100 * 2**20:
            raise ValueError(f"{path} is not a safetensors file (bad header length {length}).")
        try:
            header = json.loads(f.read(length))
        except ValueError as error:
            raise ValueError(f"{path} is not a safetensors file (header: {error}).") from None
        data = f.read()
    metadata = header.pop("__metadata__", None) or {}
    tensors = {}
    for name, info in header.items():
        begin, end = info["data_offsets"]
        if end > len(data):
            raise ValueError(
                f"{path} is truncated: tensor '{name}' ends at byte {end} of a "
                f"{len(data)}-byte data section."
            )
        raw, shape, dtype = data[begin:end], tuple(info["shape"]), info["dtype"]
        if dtype == "BF16":
            bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
            array = bits.view(np.float32)
        elif dtype in _DTYPES:
            array = np.frombuffer(raw, dtype=_DTYPES[dtype])
        else:
            raise ValueError(f"{path}: tensor '{name}' has unsupported dtype {dtype}.")
        tensors[name] = array.reshape(shape).copy()
    return tensors, metadata
