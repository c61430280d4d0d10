"""Progressive freezing inside PyTorch Lightning: a zoo ResNet on Fashion-MNIST.

The only frostline line is the callback: ``callbacks=[FrostlineCallback(policy="freezeout")]``.
Everything else is an ordinary LightningModule and Trainer.

    python examples/lightning_fashion_mnist.py                     # 1.5-5 min on 2 CPU cores
    python examples/lightning_fashion_mnist.py --method linear --accumulate 2
    python examples/lightning_fashion_mnist.py --method linear --policy-kwargs '{"freeze_start": 0.25}' --cache auto
    python examples/lightning_fashion_mnist.py --devices 2 --strategy ddp   # 2 CPU processes
    python examples/lightning_fashion_mnist.py --max-steps 6 --train-subset 256 --test-subset 256  # smoke

Needs ``pip install 'frostline[lightning]'`` and the Fashion-MNIST idx files
(Debian: ``apt-get install dataset-fashion-mnist``).
"""

from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

try:
    import lightning.pytorch as L
except ImportError:  # the older package name
    import pytorch_lightning as L

import frostline
from frostline.lab.data import load_dataset
from frostline.lab.zoo import create_model
from frostline.integrations.lightning import FrostlineCallback


class Classifier(L.LightningModule):
    """A zoo model, SGD with momentum and a cosine learning rate over the run."""

    def __init__(self, model: str = "resnet", width: int = 16, depth: int = 2, lr: float = 0.1,
                 num_classes: int = 10, in_channels: int = 1, image_size: int = 28):
        super().__init__()
        self.save_hyperparameters()
        self.net = create_model(model, width=width, depth=depth, num_classes=num_classes,
                                                 in_channels=in_channels, image_size=image_size)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.net(x), y)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def _accuracy(self, batch):
        x, y = batch
        logits = self.net(x)
        return F.cross_entropy(logits, y), (logits.argmax(1) == y).float().mean()

    def validation_step(self, batch, batch_idx):
        loss, acc = self._accuracy(batch)
        self.log_dict({"val_loss": loss, "val_acc": acc}, prog_bar=True, sync_dist=True)

    def test_step(self, batch, batch_idx):
        loss, acc = self._accuracy(batch)
        self.log_dict({"test_loss": loss, "test_acc": acc}, sync_dist=True)

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=self.hparams.lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
        # a scheduler is fine: the callback composes it with the policy's per-unit learning rates
        steps = int(self.trainer.estimated_stepping_batches)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": cosine, "interval": "step"}}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--method", default="freezeout", help="frostline method: " + ", ".join(frostline.list_policies()))
    p.add_argument("--policy-kwargs", type=json.loads, default={}, help="the method's hyperparameters, as JSON")
    p.add_argument("--cache", default="off", help="activation cache: off, auto or memory")
    p.add_argument("--model", default="resnet")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=2)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-steps", type=int, default=-1, help="stop after this many optimizer steps (-1: epochs)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--accumulate", type=int, default=1, help="accumulate_grad_batches")
    p.add_argument("--train-subset", type=int, default=20000, help="training images (0: all 55,000)")
    p.add_argument("--val-size", type=int, default=1000)
    p.add_argument("--test-subset", type=int, default=0, help="test images (0: all 10,000)")
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--strategy", default="auto", help="e.g. ddp (CPU: gloo) with --devices 2")
    p.add_argument("--threads", type=int, default=0, help="torch threads per process (0: leave as is)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ckpt-dir", default=None, help="save a Lightning checkpoint per epoch here")
    p.add_argument("--resume", default=None, help="a checkpoint to resume from (ckpt_path=)")
    p.add_argument("--progress", action="store_true", help="show Lightning's progress bar")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    L.seed_everything(args.seed, verbose=False)
    data = load_dataset("fashion-mnist", val_size=args.val_size, train_subset=args.train_subset or None,
                        test_subset=args.test_subset or None, seed=args.seed)
    loader = dict(batch_size=args.batch_size, num_workers=0)
    train = DataLoader(data.train, shuffle=True, drop_last=True, **loader)
    val = DataLoader(data.val, **loader)
    test = DataLoader(data.test, **loader)

    model = Classifier(args.model, args.width, args.depth, args.lr, data.num_classes, data.in_channels,
                       data.image_size)
    freezing = FrostlineCallback(policy=args.method, policy_kwargs=args.policy_kwargs, cache=args.cache)
    callbacks = [freezing]
    if args.ckpt_dir:
        callbacks.append(L.callbacks.ModelCheckpoint(dirpath=args.ckpt_dir, save_top_k=-1, every_n_epochs=1))
    trainer = L.Trainer(
        accelerator="cpu", devices=args.devices, strategy=args.strategy, max_epochs=args.epochs,
        max_steps=args.max_steps, accumulate_grad_batches=args.accumulate, callbacks=callbacks,
        logger=False, enable_checkpointing=bool(args.ckpt_dir), enable_progress_bar=args.progress,
        enable_model_summary=False, num_sanity_val_steps=0,
    )
    t0 = time.perf_counter()
    trainer.fit(model, train, val, ckpt_path=args.resume)
    train_s = time.perf_counter() - t0
    metrics = trainer.test(model, test, verbose=False)[0]
    result = {
        "method": args.method,
        "steps": trainer.global_step,
        "train_time_s": train_s,
        "test_accuracy": round(100.0 * float(metrics["test_acc"]), 2),
        "frozen": len(freezing.frozen_units),
        "units": len(freezing.freezer.unit_names) if freezing.freezer is not None else 0,
        "timeline": [(e.unit, e.step) for e in freezing.freezer.timeline] if freezing.freezer is not None else [],
        "cache_hits": freezing.cached.cache.stats["hits"] if freezing.cached is not None else 0,
    }
    if trainer.is_global_zero:
        print(f"{args.method}: {result['frozen']}/{result['units']} units frozen over {result['steps']} steps "
              f"in {train_s:.1f} s" + (f", {result['cache_hits']} samples replayed from the cache" if args.cache != "off" else ""))
        for unit, step in result["timeline"]:
            print(f"  froze {unit} at step {step}")
        print(f"test accuracy: {result['test_accuracy']:.2f}%")
    return result


if __name__ == "__main__":
    main()
