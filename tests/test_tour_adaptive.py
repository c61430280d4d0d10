"""The adaptive methods (AutoFreeze, SmartFRZ, the CKA oracle) used as a user would, on models
frostline did not write: a run that cannot decide says so at its first step, a cadence given in
steps works through the callbacks, and a bad CKA reference or probe is one clear error."""

import warnings

import pytest
import torch
from torch import nn

import frostline
from frostline import ConfigError
from frostline.policies import as_policy

import outside_models

pytestmark = pytest.mark.usefixtures("one_thread")


def _train(model, batch, freezer, optimizer, steps, accumulate=1, start=0):
    for s in range(start, start + steps):
        optimizer.zero_grad()
        for k in range(accumulate):
            b = batch(4, seed=100 * s + k)
            outside_models.loss_of(outside_models.forward(model, b), b).backward()
        optimizer.step()
        freezer.step()


def _messages(caught):
    return [str(w.message) for w in caught if "frostline" in str(w.message)]


def test_autofreeze_says_at_its_first_step_that_the_run_is_too_short_for_a_verdict():
    model, batch = outside_models.hf_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    freezer = frostline.Freezer(model, optimizer, frostline.AutoFreeze(interval_steps=10), total_steps=16)
    with pytest.warns(UserWarning, match="AutoFreeze can freeze nothing in this run: .* two full intervals of 10 "
                                         "steps .* step 20, after the 16 steps"):
        _train(model, batch, freezer, optimizer, 1)
    with warnings.catch_warnings(record=True) as caught:  # and the end of the run says why, not "a lower threshold"
        warnings.simplefilter("always")
        freezer.close()
    assert any("froze no unit" in m and "first verdict" in m for m in _messages(caught)), _messages(caught)


def test_smartfrz_says_at_its_first_step_when_steps_per_epoch_counts_micro_batches():
    """Gradient accumulation: an epoch of 8 micro-batches is 4 optimizer steps. Told 8 (len(loader)),
    SmartFRZ's first decision falls past a 6-step run: said at the first step, with what to pass."""
    model, batch = outside_models.peft_lora_bert()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    policy = frostline.SmartFRZ(steps_per_epoch=8, window=8, snapshots_per_epoch=8)
    freezer = frostline.Freezer(model, optimizer, policy, total_steps=6)
    with pytest.warns(UserWarning, match="smartfrz can freeze nothing in this run: .*steps_per_epoch=8.*gradient "
                                         "accumulation.*step 8, after the 6 steps"):
        _train(model, batch, freezer, optimizer, 1, accumulate=2)


def test_a_cadence_in_steps_works_by_name_though_the_run_hands_over_its_epoch_length():
    """The callbacks (and the Freezer, for a name) hand a named method the run's epoch length; a
    user who gives the cadence in steps never gave one, and was told "not both"."""
    from frostline.integrations.hf import FrostlineCallback

    FrostlineCallback("smartfrz", policy_kwargs={"stage_steps": 3, "snapshot_steps": 1, "window": 4})
    FrostlineCallback("cka-oracle", policy_kwargs={"stage_steps": 2})
    policy = as_policy("smartfrz", runtime={"steps_per_epoch": 8}, stage_steps=3, snapshot_steps=1, window=4)
    assert (policy.clock.every_steps, policy.snapshots.every_steps, policy.judged_from) == (3, 1, 4)
    model, batch = outside_models.hf_gpt2()  # its head is tied to its embedding: the tied weight is the head's
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    freezer = frostline.Freezer(model, optimizer, as_policy("smartfrz", runtime={"steps_per_epoch": 8}, stage_steps=3,
                                                            snapshot_steps=1, window=4, threshold=0.5), total_steps=6)
    _train(model, batch, freezer, optimizer, 6)
    assert freezer.policy.stages_done == 2 and freezer.policy.last_stage["step"] == 6
    assert "lm_head" not in {freezer.unit_names[i] for i in freezer.frozen}


def test_a_steps_per_epoch_in_policy_kwargs_wins_over_the_trainer_s_and_is_said():
    """A callback's policy_kwargs may set the epoch length a method counts by (data without a
    length needs it); where the trainer counts another, the setting is used and the user hears that
    the two disagree. Building the callback, before any trainer, says nothing."""
    from frostline.integrations.lightning import FrostlineCallback
    from frostline.policies import fresh_policy

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        FrostlineCallback("smartfrz", policy_kwargs={"steps_per_epoch": 10, "seed": 3})
        assert fresh_policy("smartfrz", {"steps_per_epoch": 50}, 50).steps_per_epoch == 50
        assert fresh_policy("smartfrz", {"steps_per_epoch": 10}, None).steps_per_epoch == 10  # no length: no count
    with pytest.warns(UserWarning, match="counts epochs of the steps_per_epoch=10 it was given, where the trainer "
                                         "runs 50 optimizer steps an epoch"):
        assert fresh_policy("smartfrz", {"steps_per_epoch": 10}, 50).steps_per_epoch == 10


def _other_seed(model):
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_cka_oracle_reads_a_hugging_face_probe_of_keyword_inputs_and_resumes_exactly():
    """A dict probe (input_ids and attention_mask), as a padded Hugging Face batch needs; a run
    resumed from the Freezer's state mid-way freezes what the uninterrupted run freezes."""
    probe = outside_models.hf_llama()[1](8, seed=99)
    probe.pop("labels")
    probe["attention_mask"][:, -3:] = 0

    def setup():
        model, batch = outside_models.hf_llama()
        reference = _other_seed(outside_models.hf_llama()[0])
        policy = frostline.CKAOracle(reference=reference, probe=probe, stage_steps=2, window=2, floor=0.01,
                                     tolerance=1.0)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return model, batch, optimizer, frostline.Freezer(model, optimizer, policy, total_steps=8)

    model, batch, optimizer, freezer = setup()
    _train(model, batch, freezer, optimizer, 8)
    assert freezer.frozen
    done = [(e.unit, e.step) for e in freezer.timeline]
    model, batch, optimizer, freezer = setup()
    _train(model, batch, freezer, optimizer, 3)
    saved = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "freezer": freezer.state_dict()}
    model, batch, optimizer, freezer = setup()
    model.load_state_dict(saved["model"])
    freezer.load_state_dict(saved["freezer"])
    optimizer.load_state_dict(saved["optimizer"])
    _train(model, batch, freezer, optimizer, 5, start=3)
    assert [(e.unit, e.step) for e in freezer.timeline] == done


def test_a_cka_reference_that_cannot_serve_is_one_clear_error():
    model, batch = outside_models.hf_bert()
    probe = batch(8, seed=9)["input_ids"]
    for bad in (model.state_dict(), "runs/reference/model.pt"):  # the weights, not a model: at once
        with pytest.raises(ConfigError, match="must be an nn.Module .* load the run's weights"):
            frostline.CKAOracle(reference=bad, probe=probe, stage_steps=2)
    with pytest.raises(ConfigError, match="needs both reference= .* probe is missing"):
        frostline.CKAOracle(reference=model, stage_steps=2)
    with pytest.raises(ConfigError, match="at least 4 samples"):
        frostline.CKAOracle(reference=model, probe=probe[:2], stage_steps=2)
    transformers = pytest.importorskip("transformers")
    deeper = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=outside_models.VOCAB, hidden_size=32, num_hidden_layers=6, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=2))
    for reference, why in ((outside_models.hf_gpt2()[0], "has no module bert.embeddings"),
                           (deeper, "has parameters this model lacks .*layer.4"),
                           (model, "is the model being trained")):
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        with pytest.raises(ConfigError, match=f"CKA reference .*{why}"):
            frostline.Freezer(model, optimizer, frostline.CKAOracle(reference=reference, probe=probe, stage_steps=2),
                              total_steps=8, example_input=probe[:4])


def test_a_cka_reference_with_the_models_own_weights_is_warned_about():
    """Built with the same seed (every builder here seeds 0) the reference starts where the model
    does: CKA 1 on every unit, nothing to measure progress by, so the oracle could never freeze."""
    model, batch = outside_models.hf_bert()
    same, _ = outside_models.hf_bert()
    probe = batch(8, seed=9)["input_ids"]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.warns(UserWarning, match="very weights of this model in every unit below the head"):
        frostline.Freezer(model, optimizer, frostline.CKAOracle(reference=same, probe=probe, stage_steps=2),
                          total_steps=8, example_input=probe[:4])


def test_a_cka_probe_on_a_model_without_forward_says_to_define_one():
    class StepOnly(nn.Module):  # a LightningModule computing in training_step, say
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body, self.head = nn.Linear(4, 4), nn.Linear(4, 2)

    model, reference = StepOnly(), StepOnly()
    torch.nn.init.zeros_(reference.body.weight)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    policy = frostline.CKAOracle(reference=reference, probe=torch.randn(8, 4), stage_steps=1)
    with pytest.raises(frostline.ConfigError, match="define forward"):
        frostline.Freezer(model, optimizer, policy, 4, units=["body", "head"]).step()


def test_cka_oracle_settings_are_checked_when_a_callback_is_made_without_its_reference():
    from frostline.integrations.callback_options import checked_options

    with pytest.raises(ConfigError, match="window"):
        checked_options("cka-oracle", {"window": 1}, 0, "off", 1024)  # the reference comes with the run
    assert checked_options("cka-oracle", {"window": 3}, 0, "off", 1024) == ("cka-oracle", {"window": 3}, 0)
