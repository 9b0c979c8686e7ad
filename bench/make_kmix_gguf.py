#!/usr/bin/env python3
"""Write a RANDOM-WEIGHT llama GGUF of TinyLlama-1.1B shape in a Q4_K_M-like type mix,
for K-quant speed benchmarks (the text it generates is gibberish; the compute and memory
traffic per token equal the real model's).

Types: Q4_K for token_embd and most matrices; Q6_K for output.weight, every attn_v and every
ffn_down; F32 norms. (llama.cpp's Q4_K_M gives Q6_K to only some of the attn_v / ffn_down
layers; --q6k-layers every makes all of them Q6_K, the default, and --q6k-layers llama picks
the same layers llama.cpp does: the first and last eighth and every third in between.)

Block bytes are random with sane fp16 super-block scales, so dequantized weights have a
standard deviation near 0.02. Rows come from a pool of random rows, which keeps generation
to seconds. Tokenizer metadata is copied from another GGUF (default: the shared
llama-2-tiny-random.gguf, a 32000-token llama vocabulary).

usage: make_kmix_gguf.py OUT.gguf [--vocab-from X.gguf] [--layers N] [--seed S]
verify: python3 /work/shared/tools/gguf_inspect.py OUT.gguf
"""
import argparse
import os
import random
import struct
import sys

SHARED = os.environ.get("LLMESH_SHARED",
                        os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared"))
sys.path.insert(0, os.path.join(SHARED, "tools"))
import gguf_inspect as gi  # noqa: E402
import llama2c_to_gguf as lc  # noqa: E402

T_F32, T_Q4_K, T_Q6_K = 0, 12, 14
FTYPE_MOSTLY_Q4_K_M = 15
QK_K = 256
BLOCK_BYTES = {T_Q4_K: 144, T_Q6_K: 210}
POOL_ROWS = 64

# TinyLlama-1.1B: dim, layers, heads, kv heads, ffn, context
SHAPE = (2048, 22, 32, 4, 5632, 2048)


def q4_k_block(rng):
    """d, dmin (fp16), 12 bytes of 6-bit scales/mins, 128 bytes of 4-bit codes.
    With scales ~U(0,63), codes ~U(0,15): d*sc*q averages ~240*d, dmin*m ~32*dmin; dmin = 7.5*d
    centers the weights, d = 1e-4 gives a standard deviation of about 0.02."""
    return struct.pack("<ee", 1.0e-4, 7.5e-4) + rng.randbytes(12 + 128)


def q6_k_block(rng):
    """128 bytes low nibbles, 64 bytes high bits, 16 int8 scales, d (fp16).
    Codes - 32 have rms ~18, int8 scales rms ~74: d = 1.5e-5 gives ~0.02."""
    return rng.randbytes(128 + 64 + 16) + struct.pack("<e", 1.5e-5)


def random_row(ne0, qtype, rng):
    make = q4_k_block if qtype == T_Q4_K else q6_k_block
    return b"".join(make(rng) for _ in range(ne0 // QK_K))


def random_tensor(dims, qtype, rng, pools):
    ne0, nrows = dims[0], 1
    for d in dims[1:]:
        nrows *= d
    if ne0 % QK_K:
        raise ValueError("row length %d is not a multiple of %d" % (ne0, QK_K))
    key = (ne0, qtype)
    if key not in pools:
        pools[key] = [random_row(ne0, qtype, rng) for _ in range(POOL_ROWS)]
    pool = pools[key]
    return b"".join(pool[rng.randrange(POOL_ROWS)] for _ in range(nrows))


def tokenizer_kvs(path):
    """The tokenizer.* keys of another GGUF, re-encoded for lc.write_gguf."""
    _, kv, _, _, _ = gi.read_gguf(path)
    elem = {"str": lc.VT_STR, "f32": lc.VT_F32, "i32": lc.VT_I32}
    out = []
    for k, v in kv.items():
        if not k.startswith("tokenizer."):
            continue
        if isinstance(v, tuple):  # ("arr", elem type name, count, values)
            out.append((k, lc.VT_ARR, (elem[v[1]], v[3])))
        elif isinstance(v, bool):
            out.append((k, lc.VT_BOOL, v))
        elif isinstance(v, int):
            out.append((k, lc.VT_U32, v))
        elif isinstance(v, str):
            out.append((k, lc.VT_STR, v))
    return out, len(kv["tokenizer.ggml.tokens"][3])


def q6k_layer(i, n_layers, mode):
    if mode == "every":
        return True
    # llama.cpp's use_more_bits: first and last eighth, and every third layer in between
    return i < n_layers // 8 or i >= 7 * n_layers // 8 or (i - n_layers // 8) % 3 == 2


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("out")
    ap.add_argument("--vocab-from", default=os.path.join(SHARED, "models", "llama-2-tiny-random.gguf"))
    ap.add_argument("--layers", type=int, default=SHAPE[1], help="transformer blocks (default 22)")
    ap.add_argument("--q6k-layers", choices=["every", "llama"], default="every")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    dim, _, H, KV, ffn, ctx = SHAPE
    L = a.layers
    hd = dim // H
    rng = random.Random(a.seed)
    tok_kvs, V = tokenizer_kvs(a.vocab_from)
    kvs = [
        ("general.architecture", lc.VT_STR, "llama"),
        ("general.name", lc.VT_STR, "synthetic-random-tinyllama-1.1b-kmix"),
        ("general.file_type", lc.VT_U32, FTYPE_MOSTLY_Q4_K_M),
        ("llama.context_length", lc.VT_U32, ctx),
        ("llama.embedding_length", lc.VT_U32, dim),
        ("llama.block_count", lc.VT_U32, L),
        ("llama.feed_forward_length", lc.VT_U32, ffn),
        ("llama.rope.dimension_count", lc.VT_U32, hd),
        ("llama.rope.freq_base", lc.VT_F32, 10000.0),
        ("llama.attention.head_count", lc.VT_U32, H),
        ("llama.attention.head_count_kv", lc.VT_U32, KV),
        ("llama.attention.layer_norm_rms_epsilon", lc.VT_F32, 1e-5),
        ("llama.vocab_size", lc.VT_U32, V),
    ] + tok_kvs

    pools, T = {}, []

    def matrix(name, dims, qtype):
        T.append((name, dims, qtype, random_tensor(dims, qtype, rng, pools)))

    def norm(name, n):
        T.append((name, [n], T_F32, struct.pack("<%df" % n, *([1.0] * n))))

    matrix("token_embd.weight", [dim, V], T_Q4_K)
    for i in range(L):
        p = "blk.%d." % i
        hi = T_Q6_K if q6k_layer(i, L, a.q6k_layers) else T_Q4_K
        norm(p + "attn_norm.weight", dim)
        matrix(p + "attn_q.weight", [dim, H * hd], T_Q4_K)
        matrix(p + "attn_k.weight", [dim, KV * hd], T_Q4_K)
        matrix(p + "attn_v.weight", [dim, KV * hd], hi)
        matrix(p + "attn_output.weight", [H * hd, dim], T_Q4_K)
        norm(p + "ffn_norm.weight", dim)
        matrix(p + "ffn_gate.weight", [dim, ffn], T_Q4_K)
        matrix(p + "ffn_down.weight", [ffn, dim], hi)
        matrix(p + "ffn_up.weight", [dim, ffn], T_Q4_K)
    norm("output_norm.weight", dim)
    matrix("output.weight", [dim, V], T_Q6_K)
    lc.write_gguf(a.out, kvs, T)
    print("wrote %s: %d bytes, %d tensors" % (a.out, os.path.getsize(a.out), len(T)))


if __name__ == "__main__":
    main()
