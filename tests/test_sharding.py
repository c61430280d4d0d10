"""Sharded data parallelism (FSDP, FSDP2, DeepSpeed) is refused with one clear error before
anything changes: under it the optimizer and the backward work on the wrapper's own copies of the
parameters, so a unit frozen by ``requires_grad`` and taken out of the optimizer goes on training.
The wrappers run here for real, in one gloo process on the CPU."""

import datetime
import gc
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

import frostline
from frostline.errors import ConfigError


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))


def _worker(rank: int, port: int, out: str) -> None:
    import torch.distributed as dist
    from torch.distributed.fsdp import FullyShardedDataParallel, fully_shard

    os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=20))
    results = {}
    torch.manual_seed(0)
    fsdp2 = _net()
    fully_shard(fsdp2)  # one group over the whole model: the case that trained frozen units before
    fsdp1 = FullyShardedDataParallel(_net(), device_id=torch.device("cpu"))
    for name, model in (("fsdp2", fsdp2), ("fsdp1", fsdp1)):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        try:
            frostline.Freezer(model, optimizer, "linear", total_steps=10)
            results[name] = None
        except ConfigError as e:
            results[name] = str(e)
        results[name + "_trainable"] = all(p.requires_grad for p in model.parameters())
    del fsdp1, fsdp2, model, optimizer  # FSDP holds the group: freed after it at exit, it can abort
    gc.collect()
    dist.destroy_process_group()
    with open(out, "w") as f:
        json.dump(results, f)


@pytest.mark.integration  # one spawned process: a few seconds
def test_fsdp_and_fsdp2_models_are_refused_before_anything_is_frozen(tmp_path):
    out = tmp_path / "results.json"
    mp.start_processes(_worker, args=(_free_port(), str(out)), nprocs=1, start_method="spawn")
    results = json.loads(out.read_text())
    assert "FSDP2 (fully_shard)" in results["fsdp2"] and "DistributedDataParallel" in results["fsdp2"]
    assert "FSDP (FullyShardedDataParallel)" in results["fsdp1"]
    assert results["fsdp2_trainable"] and results["fsdp1_trainable"]


def test_a_plain_model_is_not_taken_for_a_sharded_one():
    from frostline.exploit.distributed import sharding

    model = _net()
    assert sharding(model, torch.optim.SGD(model.parameters(), lr=0.1)) is None


def test_the_hf_callback_refuses_a_trainer_set_up_for_fsdp_or_deepspeed(tmp_path, monkeypatch):
    pytest.importorskip("transformers")
    from transformers import TrainerControl, TrainerState, TrainingArguments
    from frostline.integrations.hf import FrostlineCallback

    model = _net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = TrainerState()
    state.max_steps = 10
    fsdp = TrainingArguments(str(tmp_path), fsdp=True, use_cpu=True, report_to=[])
    with pytest.raises(ConfigError, match="set up to train under FSDP.*Train without FSDP"):
        FrostlineCallback(policy="linear").on_train_begin(fsdp, state, TrainerControl(), model=model,
                                                          optimizer=optimizer)
    plain = TrainingArguments(str(tmp_path), use_cpu=True, report_to=[])
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")  # what `accelerate launch` sets for a DeepSpeed config
    with pytest.raises(ConfigError, match="under DeepSpeed"):
        FrostlineCallback(policy="linear").on_train_begin(plain, state, TrainerControl(), model=model,
                                                          optimizer=optimizer)
    assert all(p.requires_grad for p in model.parameters())
    monkeypatch.delenv("ACCELERATE_USE_DEEPSPEED")
    callback = FrostlineCallback(policy="linear")
    callback.on_train_begin(plain, state, TrainerControl(), model=model, optimizer=optimizer)
    assert callback.freezer is not None
