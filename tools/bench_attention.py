"""Memory and time of attention at scale on this machine's CPU (lesson 16's figures, as one table).

Per sequence length L = S (one head, D = 64, float32, batch 1): the peak bytes and the time of plain
attention (``attn_course.scaled_dot_product_attention``, which holds the (L, S) matrices),
``attn_course.flash.tiled_attention`` (128 x 128 tiles) and PyTorch's fused
``torch.nn.functional.scaled_dot_product_attention``, with the time ratios to the fused kernel. Then the
KV cache: tokens per second of greedy decoding without and with the cache at 128, 512 and 1024 tokens of
context (the last 16 tokens of each), and the cache's size for multi-head, grouped-query and
multi-query attention. Peak bytes come from ``attn_course.flash.peak_memory`` (the CPU allocator's own
events); times are the best of ``--repeat`` runs. One thread, as in lesson 16.

Usage: python tools/bench_attention.py [--lengths 256 512 1024 2048 4096] [--repeat 3] [--threads 1]
"""
import argparse
import sys
import time
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import attn_course as ac  # noqa: E402
from attn_course import flash, kv_cache  # noqa: E402
from attn_course.apps import generation  # noqa: E402

FUNCTIONS = {"plain": (ac.scaled_dot_product_attention, {}),
             "tiled": (flash.tiled_attention, {"block_q": 128, "block_k": 128}),
             "fused": (F.scaled_dot_product_attention, {})}


def best_seconds(fn, args, kwargs, repeat):
    fn(*args, **kwargs)                                                   # warm up
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[256, 512, 1024, 2048, 4096])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); one head, D = 64, float32, CPU\n")
    print("| L = S | (L, S) matrix | plain peak | tiled peak | fused peak | plain ms | tiled ms | fused ms "
          "| plain / fused | tiled / fused |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for L in args.lengths:
        q, k, v = (torch.randn(1, 1, L, 64, generator=g) for _ in range(3))   # (B, H, L, D)
        peak = {name: flash.peak_memory(fn, q, k, v, **kw)[1] for name, (fn, kw) in FUNCTIONS.items()}
        ms = {name: 1e3 * best_seconds(fn, (q, k, v), kw, args.repeat) for name, (fn, kw) in FUNCTIONS.items()}
        print(f"| {L} | {4 * L * L / 2**20:.2f} MiB | " + " | ".join(f"{peak[n] / 2**20:.2f} MiB" for n in FUNCTIONS)
              + " | " + " | ".join(f"{ms[n]:.1f}" for n in FUNCTIONS)
              + f" | {ms['plain'] / ms['fused']:.1f}x | {ms['tiled'] / ms['fused']:.1f}x |")

    torch.manual_seed(0)
    lm = generation.CharTransformer(vocab_size=65, d_model=128, num_heads=4, num_layers=4, max_len=1024).eval()
    print("\nKV cache: CharTransformer(d_model=128, 4 heads, 4 layers), greedy, the last 16 tokens at each context\n")
    print("| context | tokens/s without cache | tokens/s with cache | speed-up | same ids |")
    print("|---|---|---|---|---|")
    for row in generation.decoding_speed(lm, lengths=(128, 512, 1024), new_tokens=16):
        print(f"| {row['tokens']} | {row['no_cache']:.1f} | {row['cache']:.1f} | {row['speedup']:.1f}x | {row['same_ids']} |")
    print("\nKV cache size, Llama 3 8B's shape (32 layers, 32 query heads, D = 128), 8,192 tokens, float16\n")
    print("| key/value heads | bytes per sequence |")
    print("|---|---|")
    for kv_heads in (32, 8, 1):
        size = kv_cache.kv_cache_bytes(32, kv_heads, 128, 8192, dtype=torch.float16)
        print(f"| {kv_heads} | {size / 2**30:.2f} GiB |")


if __name__ == "__main__":
    main()
