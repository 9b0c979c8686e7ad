#!/usr/bin/env python3
"""Builds the GGUF fuzzer's seed corpus from the small real models' headers.

usage: make_corpus.py MODELS_DIR OUT_DIR

For each small model it writes two seeds: the header with every tensor shrunk to one block (so
the seed parses and the fuzzer reaches the tensor checks) and the raw header bytes alone (data
section cut off). It also writes a synthetic file with every metadata type and nested arrays.
Standard library only.
"""
import os
import struct
import sys

MODELS = ["stories260K-f32.gguf", "stories260K-q4_0.gguf", "stories260K-q8_0.gguf",
          "stories260K-moe4x2-f32.gguf"]
BLOCK = {0: (1, 4), 1: (1, 2), 2: (32, 18), 3: (32, 20), 6: (32, 22), 7: (32, 24), 8: (32, 34),
         10: (256, 84), 12: (256, 144), 14: (256, 210), 30: (1, 2)}
SCALAR = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}


def skip_value(b, p, t):
    if t in SCALAR:
        return p + SCALAR[t]
    if t == 8:
        (n,) = struct.unpack_from("<Q", b, p)
        return p + 8 + n
    et, n = struct.unpack_from("<IQ", b, p)
    p += 12
    if et in SCALAR:
        return p + n * SCALAR[et]
    for _ in range(n):
        p = skip_value(b, p, et)
    return p


def split(b):
    """Returns (metadata bytes, metadata count, tensor infos, end of the tensor infos)."""
    n_t, n_kv = struct.unpack_from("<QQ", b, 8)
    p = 24
    for _ in range(n_kv):
        (n,) = struct.unpack_from("<Q", b, p)
        p += 8 + n
        (t,) = struct.unpack_from("<I", b, p)
        p = skip_value(b, p + 4, t)
    kv = b[24:p]
    tensors = []
    for _ in range(n_t):
        (n,) = struct.unpack_from("<Q", b, p)
        name = b[p + 8:p + 8 + n]
        p += 8 + n
        (nd,) = struct.unpack_from("<I", b, p)
        dims = struct.unpack_from("<%dQ" % nd, b, p + 4)
        p += 4 + 8 * nd
        t, off = struct.unpack_from("<IQ", b, p)
        p += 12
        tensors.append((name, dims, t, off))
    return kv, n_kv, tensors, p


def gguf(kv, n_kv, tensors, align=32):
    """tensors: (name, dims, type, data bytes)."""
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), n_kv) + kv)
    off = 0
    offs = []
    for name, dims, t, data in tensors:
        offs.append(off)
        out += struct.pack("<Q", len(name)) + name + struct.pack("<I", len(dims))
        out += struct.pack("<%dQ" % len(dims), *dims) + struct.pack("<IQ", t, off)
        off = (off + len(data) + align - 1) // align * align
    out += b"\0" * (-len(out) % align)
    body = bytearray()
    for (name, dims, t, data), o in zip(tensors, offs):
        body += b"\0" * (o - len(body)) + data
    body += b"\0" * (-len(body) % align)
    return bytes(out) + bytes(body)


def kv_str(k, v):
    return struct.pack("<Q", len(k)) + k + struct.pack("<IQ", 8, len(v)) + v


def synthetic():
    kv = bytearray()
    n = 0

    def add(key, t, payload):
        nonlocal kv, n
        kv += struct.pack("<Q", len(key)) + key + struct.pack("<I", t) + payload
        n += 1

    add(b"general.architecture", 8, struct.pack("<Q", 5) + b"synth")
    add(b"general.alignment", 4, struct.pack("<I", 64))
    for t, fmt, v in [(0, "<B", 200), (1, "<b", -5), (2, "<H", 60000), (3, "<h", -3),
                      (4, "<I", 7), (5, "<i", -7), (6, "<f", 1.5), (7, "<?", True),
                      (10, "<Q", 2**63), (11, "<q", -2**40), (12, "<d", 1e300)]:
        add(b"t.s%d" % t, t, struct.pack(fmt, v))
    add(b"t.arr_f32", 9, struct.pack("<IQ3f", 6, 3, 0.5, -1.0, 2.0))
    add(b"t.arr_str", 9, struct.pack("<IQ", 8, 2) + struct.pack("<Q", 1) + b"a" +
        struct.pack("<Q", 0))
    inner = struct.pack("<IQ2b", 1, 2, -1, 2) + struct.pack("<IQ", 8, 1) + struct.pack("<Q", 2) + b"hi"
    add(b"t.nested", 9, struct.pack("<IQ", 9, 2) + struct.pack("<IQ", 9, 2) + inner +
        struct.pack("<IQ", 12, 1) + struct.pack("<d", 1e-300))
    tensors = [(b"a", (4, 2), 0, bytes(range(32))), (b"q", (32, 1), 8, bytes(34)),
               (b"k", (256,), 12, bytes(144)), (b"h", (2, 1, 1, 3), 1, bytes(12))]
    return gguf(bytes(kv), n, tensors, 64)


def main():
    models, out = sys.argv[1], sys.argv[2]
    os.makedirs(out, exist_ok=True)
    for m in MODELS:
        path = os.path.join(models, m)
        if not os.path.exists(path):
            continue
        b = open(path, "rb").read()
        kv, n_kv, tensors, end = split(b)
        stem = m.replace(".gguf", "")
        small = []
        for name, dims, t, off in tensors:
            be, bb = BLOCK.get(t, (1, 4))
            small.append((name, (be,) + (1,) * (len(dims) - 1), t, bytes(bb)))
        open(os.path.join(out, stem + "-shrunk.gguf"), "wb").write(gguf(kv, n_kv, small))
        open(os.path.join(out, stem + "-header.gguf"), "wb").write(b[:end])
    open(os.path.join(out, "synthetic-all-types.gguf"), "wb").write(synthetic())


if __name__ == "__main__":
    main()
