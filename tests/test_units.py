import pytest
import torch
from torch import nn

from frostline import ModelError, freeze_units
from frostline.lab.zoo import create_model


class OutOfOrder(nn.Module):
    """Registers its layers in a different order from the one they run in, owns a parameter
    directly, and keeps conv and BN as siblings of a bigger block."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 10)
        self.block = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.bn1 = nn.BatchNorm2d(8)
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x))) * self.scale
        x = self.block(x)
        return self.fc(x.mean((2, 3)))


def test_units_follow_execution_order_not_registration(batch):
    model = OutOfOrder()
    units = freeze_units(model, example_input=batch[0])
    assert [u.module_names for u in units] == [["conv1", "bn1"], ["block.0", "block.1", "block.2"], ["fc"]]
    assert units[-1].name == "fc"  # the head is last


def test_every_parameter_belongs_to_exactly_one_unit(batch):
    model = OutOfOrder()
    units = freeze_units(model, example_input=batch[0])
    ids = [id(p) for u in units for p in u.params]
    assert len(ids) == len(set(ids)) == len(list(model.parameters()))
    assert "scale" in units[0].param_names  # owned by the root container, used by the first unit


def test_zoo_units_are_the_children(batch):
    for name in ["resnet", "vgg", "mobilenetv2", "vit"]:
        model = create_model(name)
        units = freeze_units(model, example_input=batch[0])
        assert [u.module_names for u in units] == [[n] for n, _ in model.named_children()], name
        assert units[-1].name == "head"


def test_vit_cls_token_and_pos_embed_are_in_a_unit(batch):
    model = create_model("vit")
    units = freeze_units(model, example_input=batch[0])
    names = [n for u in units for n in u.param_names]
    assert any(n.endswith("cls_token") for n in names) and any(n.endswith("pos_embed") for n in names)
    assert len(names) == len(list(model.parameters()))


def test_leaf_granularity_keeps_conv_and_bn_together(batch):
    model = OutOfOrder()
    units = freeze_units(model, granularity="leaf", example_input=batch[0])
    assert [u.module_names for u in units] == [["conv1", "bn1"], ["block.0", "block.1"], ["fc"]]


def test_explicit_unit_names(batch):
    model = OutOfOrder()
    units = freeze_units(model, units=[["conv1", "bn1"], "block", "fc"], example_input=batch[0])
    assert [u.name for u in units] == ["conv1", "block", "fc"]


def test_bad_units_get_clear_errors(batch):
    model = OutOfOrder()
    with pytest.raises(ModelError, match="do not exist"):
        freeze_units(model, units=["conv1", "nope"], example_input=batch[0])
    with pytest.raises(ModelError, match="granularity"):
        freeze_units(model, granularity="layer", example_input=batch[0])
    for p in model.parameters():
        p.requires_grad_(False)
    with pytest.raises(ModelError, match="no trainable parameters"):
        freeze_units(model, example_input=batch[0])
    with pytest.raises(ModelError, match="no trainable parameters"):
        freeze_units(nn.ReLU(), example_input=batch[0])


class Tied(nn.Module):
    """A small language model whose head *is* its embedding (GPT-2's tie)."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(16, 8)
        self.body = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8))
        self.head = nn.Linear(8, 16, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids):
        return self.head(self.body(self.embed(ids)))


def test_a_tied_parameter_belongs_to_the_last_unit_that_uses_it():
    model = Tied()
    units = freeze_units(model, granularity="leaf", example_input=torch.randint(0, 16, (2, 3)))
    # the embedding holds nothing of its own once its weight goes to the head: no unit
    assert [u.name for u in units] == ["body.0", "body.1", "head"]
    assert units[-1].params[0] is model.embed.weight
    ids = [id(p) for u in units for p in u.params]
    assert len(ids) == len(set(ids))
    with pytest.raises(ModelError, match="no trainable parameter of their own"):
        freeze_units(model, units=["embed", "body", "head"], example_input=torch.randint(0, 16, (2, 3)))


def test_named_units_are_checked_against_the_traced_order(batch):
    model = OutOfOrder()
    x = batch[0]
    with pytest.raises(ModelError, match="not listed in the order they run.*'block' runs before 'fc'"):
        freeze_units(model, units=[["conv1", "bn1"], "fc", "block"], example_input=x)
    with pytest.raises(ModelError, match=r"module\(s\) \['block.0'\] ran with trainable parameters but belong to no"):
        freeze_units(model, units=[["conv1", "bn1"], "block.1", "fc"], example_input=x)
    with pytest.raises(ModelError, match="listed in two units"):
        freeze_units(model, units=[["conv1", "bn1"], ["block", "conv1"], "fc"], example_input=x)
    with pytest.raises(ModelError, match="units overlap"):
        freeze_units(model, units=[["conv1", "bn1"], "block", "block.0", "fc"], example_input=x)


def test_units_with_nothing_trainable_are_left_out(batch):
    """What a LoRA model looks like: most layers are frozen from the start; a policy counts only
    the units it can freeze."""
    model = OutOfOrder()
    for p in model.block.parameters():
        p.requires_grad_(False)
    with pytest.warns(UserWarning, match="only 2 freeze unit"):
        units = freeze_units(model, example_input=batch[0])
    assert [u.name for u in units] == ["conv1", "fc"]


def test_a_model_of_fewer_than_three_units_warns_and_names_them(batch):
    model = nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, 10))
    with pytest.warns(UserWarning, match=r"only 1 freeze unit\(s\) \['1'\].*units=\[...\].*granularity='leaf'"):
        freeze_units(model, example_input=batch[0])


def test_a_compiled_model_is_split_as_the_model_it_wraps(batch):
    model = create_model("resnet")
    compiled = torch.compile(model, backend="eager")
    units = freeze_units(compiled, example_input=batch[0])
    assert [u.module_names for u in units] == [[n] for n, _ in model.named_children()]
