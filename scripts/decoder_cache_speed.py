"""What the activation cache saves on a Llama-style decoder (Hugging Face ``LlamaForCausalLM``,
random weights, head untied), one process, round-robin.

    OMP_NUM_THREADS=1 python scripts/decoder_cache_speed.py [--layers 8] [--frozen 2 4 6] [--repeats 9]

Such a decoder computes its rotary cosines and sines once, before the first layer, and hands them
to every layer; the cache replays the hidden state entering the first trainable layer and lets the
rotary module run. For each number of frozen units k (the embedding and k - 1 layers), with every
sample of the batch already stored, it times a training step three ways:

* ``full``: nothing frozen;
* ``frozen``: the k units frozen, no cache (their forward runs, their backward does not);
* ``cached``: the same through ``CachedPrefixModel`` (their forward replayed from the cache).

Times are this process's CPU time, median over repeats. Prints each step's time and the ratios
cached/frozen (what the cache adds to freezing) and cached/full. Speed only: the weights are
random, and a cached step computes exactly what the frozen one does (checked on the first step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

import frostline
from frostline.exploit.cache import ActivationCache, CachedPrefixModel


def build(layers: int, hidden: int, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=layers,
                         num_attention_heads=max(1, hidden // 64), num_key_value_heads=max(1, hidden // 128),
                         max_position_embeddings=1024, tie_word_embeddings=False)
    return LlamaForCausalLM(config).train()


def measure(k: int, args) -> dict[str, float]:
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    idx = torch.arange(args.batch)
    steps = {}
    for name in ("full", "frozen", "cached"):
        model = build(args.layers, args.hidden, args.vocab)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        freezer = frostline.Freezer(model, opt, frostline.NoFreezing(), 1, example_input={"input_ids": ids[:2]})
        if name != "full":
            for i in range(k):
                freezer.freeze(i)
        forward = (lambda m=model: m(input_ids=ids, labels=ids).loss)
        if name == "cached":
            cached = CachedPrefixModel(model, freezer, ActivationCache(args.batch))
            forward = (lambda c=cached: c(idx, input_ids=ids, labels=ids).loss)
            forward()  # stores every sample, and checks the replay against a plain forward once

        def step(forward=forward, opt=opt):
            opt.zero_grad(set_to_none=True)
            forward().backward()
            opt.step()

        steps[name] = step
    times = {n: [] for n in steps}
    for r in range(args.warmup + args.repeats):
        for n, fn in steps.items():
            t0 = time.process_time()
            fn()
            if r >= args.warmup:
                times[n].append(time.process_time() - t0)
    return {n: 1000 * statistics.median(ts) for n, ts in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=8000)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frozen", type=int, nargs="*", default=[3, 5, 7], help="frozen units: embedding + layers")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    if any(not 1 <= k <= args.layers for k in args.frozen):
        parser.error(f"--frozen counts the embedding and the layers: 1..{args.layers}")
    print(f"Llama-style decoder: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}, batch {args.batch} x "
          f"{args.seq} tokens; torch {torch.__version__}, {torch.get_num_threads()} thread(s), "
          f"median of {args.repeats}")
    for k in args.frozen:
        t = measure(k, args)
        print(f"k={k} frozen: full {t['full']:.0f} ms  frozen {t['frozen']:.0f} ms  cached {t['cached']:.0f} ms  "
              f"cached/frozen {t['cached'] / t['frozen']:.3f}  cached/full {t['cached'] / t['full']:.3f}")


if __name__ == "__main__":
    main()
