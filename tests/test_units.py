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
