"""`cnnzoo.summary`: exact parameter and MAC counts (hand-computed here), receptive fields, depth collapse."""

import json
from collections import namedtuple

import pytest
import torch
from torch import nn

from cnnzoo import CnnzooError, create_model
from cnnzoo.summary import format_summary, summarize, summarize_model, summary_to_dict


def rows_by_name(summary):
    return {r.name: r for r in summary.rows}


def check_totals(summary, model):
    """Rows add up to the totals, and the totals to `model.parameters()` (each tensor once)."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert summary.total_params == sum(r.params for r in summary.rows) == total
    assert summary.trainable_params == sum(r.trainable for r in summary.rows) == trainable
    assert summary.frozen_params == total - trainable
    assert summary.total_macs == sum(r.macs for r in summary.rows)


# --- LeNet-5: the lecture's table --------------------------------------------------------------


def test_lenet5_reproduces_the_lecture_table():
    model = create_model("lenet5")
    s = summarize(model, (1, 28, 28))
    rows = rows_by_name(s)
    conv1, pool1, conv2, pool2 = (rows[f"features.{i}"] for i in (1, 3, 4, 6))
    fc1, fc2, fc3 = (rows[f"classifier.{i}"] for i in (0, 2, 4))

    assert (conv1.output_shape, conv1.params) == ((6, 28, 28), 6 * (1 * 5 * 5 + 1))
    assert conv1.param_formula == "6 x (1x5x5 + 1) = 156"
    assert pool1.output_shape == (6, 14, 14)
    assert (conv2.output_shape, conv2.params) == ((16, 10, 10), 16 * (6 * 5 * 5 + 1))
    assert conv2.param_formula == "16 x (6x5x5 + 1) = 2,416"
    assert pool2.output_shape == (16, 5, 5)
    assert (fc1.params, fc2.params, fc3.params) == (120 * (400 + 1), 84 * (120 + 1), 10 * (84 + 1))
    assert fc1.param_formula == "120 x (400 + 1) = 48,120"
    assert s.total_params == s.trainable_params == 156 + 2_416 + 48_120 + 10_164 + 850 == 61_706
    assert s.frozen_params == 0

    assert conv1.macs == 6 * 28 * 28 * (1 * 5 * 5) == 117_600
    assert conv2.macs == 16 * 10 * 10 * (6 * 5 * 5) == 240_000
    assert (fc1.macs, fc2.macs, fc3.macs) == (400 * 120, 120 * 84, 84 * 10)
    assert s.total_macs == 117_600 + 240_000 + 48_000 + 10_080 + 840 == 416_520

    # receptive field / jump in input pixels: conv5 -> 5, pool2 -> 6 (jump 2), conv5 -> 6 + 4*2, pool -> +2
    assert [(r.receptive_field, r.jump) for r in (conv1, pool1, conv2, pool2)] == [
        ((5, 5), (1, 1)), ((6, 6), (2, 2)), ((14, 14), (2, 2)), ((16, 16), (4, 4)),
    ]  # fmt: skip
    assert fc1.receptive_field == "all" and fc1.jump is None
    # float32 outputs: pad 1x32x32, conv/relu 2 x 6x28x28, pool, conv/relu 2 x 16x10x10, pool, fcs and relus
    floats = 32 * 32 + 2 * 6 * 28 * 28 + 6 * 14 * 14 + 2 * 16 * 10 * 10 + 16 * 5 * 5 + 2 * 120 + 2 * 84 + 10
    assert s.activation_bytes == 4 * floats
    check_totals(s, model)


def test_lenet5_1998_custom_layers():
    model = create_model("lenet5_1998")
    s = summarize(model, (1, 32, 32))
    rows = rows_by_name(s)
    assert s.total_params == s.trainable_params == 60_000
    assert rows["features.3"].params == 2 * 6  # Subsampling: a coefficient and a bias per map
    assert rows["features.3"].param_formula == "2 x 6 = 12"
    c3 = rows["features.5"]  # PartialConv: its ParameterList never runs, so its weights count here
    assert c3.params == 6 * 3 * 25 + 9 * 4 * 25 + 6 * 25 + 16 == 1_516
    assert c3.macs == 10 * 10 * 25 * (6 * 3 + 9 * 4 + 1 * 6)  # the sixteen partial 5x5 convolutions
    assert rows["features.5"].receptive_field == (14, 14)  # Subsampling is a 2x2 / 2 window
    assert rows["features.9"].receptive_field == (32, 32)  # C5: 5x5 on the 5x5 map sees all 32x32
    assert rows["output"].params == 0  # the RBF prototypes are buffers
    check_totals(s, model)


# --- receptive fields ---------------------------------------------------------------------------


def test_stacked_3x3_convs_see_3_5_7():
    model = nn.Sequential(*(nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)))
    s = summarize(model, (1, 16, 16))
    assert [r.receptive_field for r in s.rows] == [(3, 3), (5, 5), (7, 7)]
    assert [r.jump for r in s.rows] == [(1, 1)] * 3


def test_stride_dilation_and_asymmetric_kernels():
    model = nn.Sequential(
        nn.Conv2d(1, 1, 3, stride=2), nn.Conv2d(1, 1, 3, dilation=2), nn.Conv2d(1, 1, (1, 7)),
        nn.AdaptiveAvgPool2d(1),
    )  # fmt: skip
    s = summarize(model, (1, 32, 32))
    # 3 (jump 2); + 2*(3-1)*2 = 11; width + (7-1)*2 = 23; then the whole input
    assert [r.receptive_field for r in s.rows] == [(3, 3), (11, 11), (11, 23), "all"]
    assert [r.jump for r in s.rows] == [(2, 2), (2, 2), (2, 2), None]
    assert "11x23" in format_summary(s)


class Inceptionish(nn.Module):
    """A stride-2 stem, then 1x1 / 3x3 / 5x5 / pool+1x1 branches concatenated, then a 1x1 conv."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.block = nn.ModuleDict(
            {
                "b1": nn.Conv2d(4, 2, 1),
                "b3": nn.Conv2d(4, 2, 3, padding=1),
                "b5": nn.Conv2d(4, 2, 5, padding=2),
                "pool": nn.MaxPool2d(3, 1, padding=1),
                "proj": nn.Conv2d(4, 2, 1),
            }
        )
        self.head = nn.Conv2d(8, 1, 1)

    def forward(self, x):
        x = self.stem(x)
        b = self.block
        x = torch.cat([b["b1"](x), b["b3"](x), b["b5"](x), b["proj"](b["pool"](x))], 1)  # not a module
        return self.head(x)


def test_branches_merge_to_the_largest_field():
    s = summarize(Inceptionish(), (3, 16, 16))
    rf = {r.name: r.receptive_field[0] for r in s.rows}
    assert rf == {"stem": 3, "block.b1": 3, "block.b3": 3 + 2 * 2, "block.b5": 3 + 4 * 2,
                  "block.pool": 7, "block.proj": 7, "head": 11}  # fmt: skip


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2, self.relu = (
            nn.Conv2d(2, 2, 3, padding=1),
            nn.Conv2d(2, 2, 3, padding=1),
            nn.ReLU(),
        )

    def forward(self, x):
        return self.relu(self.conv2(self.relu(self.conv1(x))) + x)


def test_residual_block_and_shared_module_called_twice():
    s = summarize(nn.Sequential(Residual()), (2, 8, 8))
    relu_calls = [r for r in s.rows if r.name == "0.relu"]
    assert len(relu_calls) == 2 and relu_calls[1].param_formula == ""
    assert s.rows[-1].receptive_field == (5, 5)  # max(5 from the convs, 1 from the identity)
    collapsed = summarize(nn.Sequential(Residual()), (2, 8, 8), depth=1)
    assert len(collapsed.rows) == 1
    assert collapsed.rows[0].params == 2 * 2 * (2 * 3 * 3 + 1) and collapsed.rows[0].receptive_field == (5, 5)


def test_module_called_twice_counts_its_parameters_once():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3, padding=1)

        def forward(self, x):
            return self.conv(self.conv(x))

    model = Twice()
    s = summarize(model, (1, 6, 6))
    first, second = s.rows
    assert (first.params, second.params) == (1 * 3 * 3 + 1, 0)
    assert second.param_formula == "called again: counted at conv"
    assert first.macs == second.macs == 6 * 6 * 9 and s.total_macs == 2 * 6 * 6 * 9
    assert (first.receptive_field, second.receptive_field) == ((3, 3), (5, 5))
    check_totals(s, model)


# --- parameters: tied, frozen, not run ----------------------------------------------------------


def test_tied_parameter_counted_once():
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 4), nn.Linear(4, 4))
    model[2].weight = model[1].weight
    s = summarize(model, (1, 2, 2))
    rows = rows_by_name(s)
    assert rows["1"].params == 4 * (4 + 1) and rows["1"].param_formula == "4 x (4 + 1) = 20"
    assert rows["2"].params == 4  # its bias only
    assert "shares weight with 1" in rows["2"].param_formula
    assert s.total_params == 4 * 4 + 4 + 4
    check_totals(s, model)


def test_frozen_parameters_split():
    model = create_model("lenet5")
    model.features.requires_grad_(False)
    s = summarize(model, (1, 28, 28))
    assert (s.trainable_params, s.frozen_params) == (61_706 - 2_572, 156 + 2_416)
    assert rows_by_name(s)["features.1"].trainable == 0
    assert "[frozen]" in format_summary(s)
    check_totals(s, model)


class WithUnused(nn.Module):
    NamedOut = namedtuple("NamedOut", "logits features")

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3)
        self.aux = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 2))  # never runs (like an eval-mode aux head)
        self.register_buffer("proj", torch.ones(2 * 4 * 4, 5))

    def forward(self, x):
        f = self.conv(x)
        return self.NamedOut(torch.flatten(f, 1) @ self.proj, f)  # a matmul in the model's own code


def test_not_run_modules_and_own_ops_and_named_tuple_output():
    model = WithUnused()
    s = summarize(model, (1, 6, 6))
    rows = rows_by_name(s)
    assert rows["aux"].params == 3 * 4 + 2 * 4 and rows["aux"].output_shape is None
    assert rows["aux"].param_formula.startswith("not run")
    assert rows[""].macs == 32 * 5  # the model's own matmul gets a row of its own
    assert s.total_macs == 2 * 4 * 4 * 9 + 32 * 5
    check_totals(s, model)


# --- depth, modes, output -----------------------------------------------------------------------


def test_depth_collapses_blocks():
    model = create_model("lenet5")
    s = summarize(model, (1, 28, 28), depth=1)
    assert [(r.name, r.type, r.params, r.output_shape) for r in s.rows] == [
        ("features", "Sequential", 156 + 2_416, (16, 5, 5)),
        ("classifier", "Sequential", 48_120 + 10_164 + 850, (10,)),
    ]
    assert s.rows[0].macs == 117_600 + 240_000 and s.rows[0].receptive_field == (16, 16)
    assert s.rows[0].param_formula == "156 + 2,416 = 2,572"
    check_totals(s, model)
    (whole,) = summarize(model, (1, 28, 28), depth=0).rows
    assert (whole.name, whole.params, whole.macs) == ("", 61_706, 416_520)


def test_modes_restored_and_per_image_counts():
    model = create_model("lenet5")
    model.train()
    model.classifier.eval()
    one = summarize(model, (1, 28, 28))
    three = summarize(model, (1, 28, 28), batch_size=3)
    assert model.training and model.features.training and not model.classifier.training
    assert (three.total_macs, three.activation_bytes) == (one.total_macs, one.activation_bytes)


def test_format_and_json():
    s = summarize_model("lenet5")
    text = format_summary(s)
    for expected in ("lenet5 on a 1x28x28 input", "6 x (1x5x5 + 1) = 156", "61,706", "416,520 (0.42 M)",
                     "Frozen params:     0", "Input size:        1x28x28"):  # fmt: skip
        assert expected in text
    data = json.loads(json.dumps(summary_to_dict(s)))
    assert data["total_params"] == 61_706 and data["input_size"] == [1, 28, 28]
    conv1 = next(r for r in data["rows"] if r["name"] == "features.1")
    assert conv1["receptive_field"] == [5, 5] and conv1["output_shape"] == [6, 28, 28]
    assert data["rows"][-1]["receptive_field"] == "all"


def test_bad_input_is_a_cnnzoo_error():
    with pytest.raises(CnnzooError, match="three positive integers"):
        summarize(nn.Conv2d(1, 1, 3), (1, 28))
    with pytest.raises(CnnzooError, match="depth"):
        summarize(nn.Conv2d(1, 1, 3), (1, 8, 8), depth=-1)
    with pytest.raises(CnnzooError, match="cannot run on a 1x3x3 input"):
        summarize(nn.Conv2d(1, 1, 5), (1, 3, 3))
    with pytest.raises(CnnzooError, match="did you mean"):
        summarize_model("lenet6")


# --- the zoo: hand-computed totals -----------------------------------------------------------


def test_alexnet_totals():
    model = create_model("alexnet")
    s = summarize(model, (3, 224, 224))
    convs = 64 * (3 * 11 * 11 + 1) + 192 * (64 * 5 * 5 + 1) + 384 * (192 * 9 + 1) + 256 * (384 * 9 + 1)
    convs += 256 * (256 * 9 + 1)
    fcs = 4096 * (256 * 6 * 6 + 1) + 4096 * (4096 + 1) + 1000 * (4096 + 1)
    assert s.total_params == convs + fcs == 61_100_840
    check_totals(s, model)


VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def test_vgg16_totals_macs_and_receptive_fields():
    model = create_model("vgg16")
    s = summarize(model, (3, 224, 224))
    params, macs, cin, side = 0, 0, 3, 224
    for v in VGG16:
        if v == "M":
            side //= 2
            continue
        params, macs, cin = params + v * (cin * 9 + 1), macs + side * side * v * cin * 9, v
    fcs = [(512 * 7 * 7, 4096), (4096, 4096), (4096, 1000)]
    params += sum(o * (i + 1) for i, o in fcs)
    macs += sum(o * i for i, o in fcs)
    assert s.total_params == params == 138_357_544
    assert s.total_macs == macs == 15_470_264_320
    rows = rows_by_name(s)
    assert (rows["features.0"].receptive_field, rows["features.2"].receptive_field) == ((3, 3), (5, 5))
    convs = [r.receptive_field[0] for r in s.rows if r.type in ("Conv2d", "MaxPool2d")]
    # absolute pixels: block n's 3x3 convs add 2 x jump (1, 2, 4, 8, 16), each pool adds 1 x jump
    assert convs == [3, 5, 6, 10, 14, 16, 24, 32, 40, 44, 60, 76, 92, 100, 132, 164, 196, 212]
    check_totals(s, model)


def basic_block(cin, cout, stride):
    """Two 3x3 convs without bias, two BatchNorms (2 x C), a 1x1 conv + BN shortcut when the shape changes."""
    n = cout * cin * 9 + cout * cout * 9 + 2 * 2 * cout
    return n + (cout * cin + 2 * cout if stride != 1 or cin != cout else 0)


def test_resnet18_totals_and_collapsed_blocks():
    model = create_model("resnet18")
    s = summarize(model, (3, 224, 224), depth=2)
    stages = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
    blocks = sum(basic_block(cin, cout, st) + basic_block(cout, cout, 1) for cin, cout, st in stages)
    assert s.total_params == 64 * 3 * 7 * 7 + 2 * 64 + blocks + 1000 * (512 + 1) == 11_689_512
    rows = rows_by_name(s)
    assert rows["layer2.0"].params == basic_block(64, 128, 2)
    assert rows["layer1.0"].output_shape == (64, 56, 56) and rows["layer4.1"].output_shape == (512, 7, 7)
    assert rows["layer4.1"].receptive_field == (435, 435)  # the known theoretical field of ResNet-18
    check_totals(s, model)
