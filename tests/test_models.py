"""Models: shapes, parameter counts and FLOPs against hand computation, inits, validation."""

import math

import pytest
import torch
from torch import nn

from gradkit.models import PlainCNN, ResNet, SeedCNN, build_model, count_params, flops_per_image


def conv_params(c_in: int, c_out: int, bias: bool = True) -> int:
    return 9 * c_in * c_out + (c_out if bias else 0)


def seed_cnn_params(c1: int, c2: int, hidden: int) -> int:
    return conv_params(3, c1) + conv_params(c1, c2) + (64 * c2 + 1) * hidden + (hidden + 1) * 10


def seed_cnn_flops(c1: int, c2: int, hidden: int) -> int:
    # 2 FLOPs per multiply-add: 3x3 convs at 32x32 and 16x16 outputs, then the two linears.
    return 2 * (9 * 3 * c1 * 32 * 32 + 9 * c1 * c2 * 16 * 16 + 64 * c2 * hidden + hidden * 10)


@pytest.mark.parametrize(
    "model",
    [SeedCNN(), SeedCNN(width=0.25), PlainCNN(depth=8, width=4), PlainCNN(depth=5, width=3, batchnorm=True),
     ResNet(depth=8, width=4), ResNet()],
    ids=["seed", "seed-0.25", "plain-8", "plain-bn", "resnet-8", "resnet-20"],
)
def test_every_model_maps_images_to_ten_logits_and_backpropagates(model: nn.Module) -> None:
    torch.manual_seed(0)
    out = model(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 10) and out.dtype == torch.float32
    out.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_seed_cnn_matches_the_tutorial_model_counted_by_hand() -> None:
    assert count_params(SeedCNN()) == seed_cnn_params(64, 128, 1024) == 8_475_530
    assert flops_per_image(SeedCNN()) == seed_cnn_flops(64, 128, 1024) == 58_085_376


@pytest.mark.parametrize("width, sizes", [(0.25, (16, 32, 256)), (0.5, (32, 64, 512)), (0.001, (1, 1, 1))])
def test_seed_cnn_width_scales_every_layer(width: float, sizes: tuple[int, int, int]) -> None:
    model = SeedCNN(width=width)
    assert (model.conv1.out_channels, model.conv2.out_channels, model.fc1.out_features) == sizes
    assert count_params(model) == seed_cnn_params(*sizes)
    assert flops_per_image(model) == seed_cnn_flops(*sizes)


def test_plain_cnn_has_depth_convs_in_three_stages_with_two_downsamplings() -> None:
    model = PlainCNN(depth=20, width=16)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 20
    assert [c.out_channels for c in convs] == [16] * 7 + [32] * 7 + [64] * 6
    assert [i for i, c in enumerate(convs) if c.stride == (2, 2)] == [7, 14]
    expected = conv_params(3, 16) + 6 * conv_params(16, 16) + conv_params(16, 32) + 6 * conv_params(32, 32)
    expected += conv_params(32, 64) + 5 * conv_params(64, 64) + 64 * 10 + 10
    assert count_params(model) == expected == 278_282
    macs = 32 * 32 * (9 * 3 * 16 + 6 * 9 * 16 * 16) + 16 * 16 * (9 * 16 * 32 + 6 * 9 * 32 * 32)
    macs += 8 * 8 * (9 * 32 * 64 + 5 * 9 * 64 * 64) + 64 * 10
    assert flops_per_image(model) == 2 * macs


def test_plain_cnn_batchnorm_replaces_conv_biases() -> None:
    plain, bn = PlainCNN(depth=6, width=4), PlainCNN(depth=6, width=4, batchnorm=True)
    assert sum(isinstance(m, nn.BatchNorm2d) for m in bn.modules()) == 6
    assert all(c.bias is None for c in bn.modules() if isinstance(c, nn.Conv2d))
    # Each conv loses its bias (c params) and gains BN weight and bias (2c params).
    assert count_params(bn) - count_params(plain) == sum([4, 4, 8, 8, 16, 16])


@pytest.mark.parametrize(
    "init, expected_std",
    [("kaiming", lambda fan_in, fan_out: math.sqrt(2 / fan_in)),
     ("xavier", lambda fan_in, fan_out: math.sqrt(2 / (fan_in + fan_out))),
     ("normal:0.1", lambda fan_in, fan_out: 0.1)],
)
def test_plain_cnn_inits_give_the_documented_weight_std(init: str, expected_std) -> None:
    torch.manual_seed(0)
    model = PlainCNN(depth=6, width=32, init=init)
    conv = model.features[-2]  # a 128 -> 128 conv: 147,456 weights, so the sample std is within 1%
    fan_in, fan_out = 9 * conv.in_channels, 9 * conv.out_channels
    assert conv.weight.std().item() == pytest.approx(expected_std(fan_in, fan_out), rel=0.01)
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear)))


def test_plain_cnn_default_init_is_pytorchs() -> None:
    torch.manual_seed(0)
    model = PlainCNN(depth=3, width=8)
    torch.manual_seed(0)
    reference = nn.Conv2d(3, 8, 3, padding=1)
    assert torch.equal(model.features[0].weight, reference.weight)


@pytest.mark.parametrize("init", ["he", "normal:", "normal:abc", "normal:-0.1", "normal:0", "normal:inf", "normal:nan"])
def test_plain_cnn_rejects_unknown_inits_and_lists_the_accepted_ones(init: str) -> None:
    with pytest.raises(ValueError, match="init=") as err:
        PlainCNN(depth=4, width=2, init=init)
    assert "normal:" in str(err.value)


@pytest.mark.parametrize("kw, arg", [({"depth": 2}, "depth"), ({"depth": 4.0}, "depth"), ({"width": 0}, "width"),
                                     ({"batchnorm": "no"}, "batchnorm must be True or False")])
def test_plain_cnn_rejects_bad_sizes(kw: dict, arg: str) -> None:
    with pytest.raises(ValueError, match=arg):
        PlainCNN(**kw)


def test_resnet20_has_the_papers_parameter_count_and_parameter_free_shortcuts() -> None:
    # He et al. 2016, Table 6: ResNet-20 has 0.27M parameters. Hand count: stem conv + BN,
    # 3 stages of 3 blocks (two 3x3 convs + BN each, no shortcut weights), linear 64 -> 10.
    def block(c_in: int, c: int) -> int:
        return conv_params(c_in, c, bias=False) + conv_params(c, c, bias=False) + 4 * c

    expected = conv_params(3, 16, bias=False) + 32 + 64 * 10 + 10
    expected += 3 * block(16, 16) + block(16, 32) + 2 * block(32, 32) + block(32, 64) + 2 * block(64, 64)
    assert count_params(ResNet()) == expected == 269_722
    assert sum(isinstance(m, nn.Conv2d) for m in ResNet(depth=32).modules()) == 31  # + the linear = 32


def test_resnet_shortcut_is_identity_when_the_residual_branch_is_zero() -> None:
    model = ResNet(depth=8, width=4).eval()
    block = model.blocks[1]  # the first block of stage 2: stride 2, 4 -> 8 channels
    nn.init.zeros_(block.bn2.weight)
    x = torch.rand(2, 4, 32, 32)
    expected = torch.cat([x[:, :, ::2, ::2], torch.zeros(2, 4, 16, 16)], dim=1)
    assert torch.allclose(block(x), expected)


@pytest.mark.parametrize("depth", [7, 21, 2, "20"])
def test_resnet_rejects_depths_that_are_not_6n_plus_2(depth: object) -> None:
    with pytest.raises(ValueError, match="6n"):
        ResNet(depth=depth)  # type: ignore[arg-type]


@pytest.mark.parametrize("width", [0, -1.0, "wide", True, float("nan"), float("inf")])
def test_seed_cnn_rejects_bad_widths(width: object) -> None:
    with pytest.raises(ValueError, match="width"):
        SeedCNN(width=width)  # type: ignore[arg-type]


def test_build_model_by_name_and_lists_names_on_error() -> None:
    assert isinstance(build_model("seed_cnn", width=0.25), SeedCNN)
    model = build_model("plain_cnn", depth=8, width=4, batchnorm=True, init="kaiming")
    assert isinstance(model, PlainCNN) and (model.depth, model.batchnorm, model.init) == (8, True, "kaiming")
    assert isinstance(build_model("resnet", depth=8), ResNet)
    with pytest.raises(ValueError, match="seed_cnn, plain_cnn, resnet"):
        build_model("vgg")


def test_count_params_and_flops_of_a_linear_layer_by_hand() -> None:
    model = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10))
    assert count_params(model) == 3072 * 10 + 10
    assert flops_per_image(model) == 2 * 3072 * 10


def test_flops_per_image_leaves_training_mode_and_batchnorm_statistics_alone() -> None:
    model = ResNet(depth=8, width=4).train()
    before = model.bn.running_mean.clone()
    flops_per_image(model)
    assert model.training
    assert torch.equal(model.bn.running_mean, before)
    assert model.bn.num_batches_tracked.item() == 0


@pytest.mark.parametrize("kw, words", [
    ({"name": "vgg", "model_kw": None}, "model='vgg' is not a model name; accepted values: seed_cnn, plain_cnn, resnet"),
    ({"name": ["seed_cnn"], "model_kw": None}, "is not a model name"),
    ({"name": "seed_cnn", "model_kw": [1]}, "model_kw must be None or a dict of 'seed_cnn' options (width), got [1]"),
    ({"name": "resnet", "model_kw": {"depht": 8}}, "model_kw ['depht'] are not options of 'resnet'; accepted: depth, width"),
])
def test_model_options_are_checked_by_name(kw, words) -> None:
    from gradkit.models import check_model_kw

    with pytest.raises(ValueError) as err:
        check_model_kw(**kw)
    assert words in str(err.value)


def test_check_model_builds_once_and_leaves_the_random_state() -> None:
    from gradkit.models import check_model

    state = torch.random.get_rng_state()
    assert check_model("plain_cnn", {"depth": 4, "width": 2}) == {"depth": 4, "width": 2}
    assert torch.equal(torch.random.get_rng_state(), state)
    with pytest.raises(ValueError, match=r"model_kw=\{'depth': 7\} does not build a 'resnet': depth must be 6n \+ 2"):
        check_model("resnet", {"depth": 7})
