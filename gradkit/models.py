"""The CIFAR-10 models the lessons train: a tutorial CNN, a deep plain CNN and a small ResNet.

All take ``(B, 3, 32, 32)`` float images and return ``(B, 10)`` logits.

- :class:`SeedCNN`: the two-conv model every clipping tutorial trains.
- :class:`PlainCNN`: a deep stack of 3x3 convolutions without shortcuts, the test bed for
  vanishing and exploding gradients (see ``docs/models.md`` for where it fails).
- :class:`ResNet`: the CIFAR ResNet of He et al. (2016), the same depth trained with shortcuts.

FLOPs here are forward FLOPs per image of the convolutions and matrix multiplies, counted by
``torch.utils.flop_counter`` with one multiply-add = 2 FLOPs; element-wise work (ReLU,
pooling, batch norm, additions) is not counted.

>>> model = build_model("seed_cnn", width=0.25)
>>> model(torch.zeros(2, 3, 32, 32)).shape
torch.Size([2, 10])
"""

from __future__ import annotations

import inspect
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .checks import check_bool, check_int, check_positive

INITS = ("default", "kaiming", "xavier", "normal:<std>")


def _scaled(size: int, width: float) -> int:
    return max(1, round(size * width))


class SeedCNN(nn.Module):
    """The classic tutorial CNN: conv3x3 3->64, ReLU, maxpool, conv3x3 64->128, ReLU, maxpool,
    flatten (128*8*8 = 8192), linear 8192->1024, ReLU, linear 1024->10.

    ``width`` scales every channel and hidden size: size -> max(1, round(size * width)).
    Measured (``count_params``, ``flops_per_image``):

    - ``width=1.0``: 8,475,530 parameters, 58.1 MFLOPs forward per image.
    - ``width=0.25`` (the CPU model): 532,202 parameters, 4.3 MFLOPs forward per image.

    >>> SeedCNN(width=0.25)(torch.zeros(1, 3, 32, 32)).shape
    torch.Size([1, 10])
    """

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        check_positive("width", width)  # 1.0: the tutorial model, 0.25 for CPUs
        c1, c2, hidden = _scaled(64, width), _scaled(128, width), _scaled(1024, width)
        self.width = float(width)
        self.conv1 = nn.Conv2d(3, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 8 * 8, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def _initializer(init: str) -> Callable[[nn.Module], None] | None:
    """Turn an ``init`` string into a function applied to every conv and linear layer."""
    if init == "default":
        return None
    if init == "kaiming":
        def weight_init(w: torch.Tensor) -> None:
            nn.init.kaiming_normal_(w, nonlinearity="relu")
    elif init == "xavier":
        def weight_init(w: torch.Tensor) -> None:
            nn.init.xavier_normal_(w)
    elif init.startswith("normal:"):
        try:
            std = check_positive("std", float(init.split(":", 1)[1]))
        except ValueError:  # not a number, or inf/nan/<= 0 (normal:inf drew infinite weights)
            raise ValueError(f"init={init!r}: the std after 'normal:' must be a finite number > 0, "
                             "e.g. 'normal:0.1'") from None

        def weight_init(w: torch.Tensor) -> None:
            nn.init.normal_(w, 0.0, std)
    else:
        raise ValueError(f"init={init!r} is not an init; accepted values: {', '.join(INITS)}")

    def apply(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight_init(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    return apply


class PlainCNN(nn.Module):
    """A deep plain CNN: ``depth`` 3x3 conv layers with ReLU and no shortcuts, then global
    average pooling and a linear layer to 10 classes.

    Layer ``i`` (0-based) sits in stage ``s = 3 * i // depth``; stages have ``width``,
    ``2 * width``, ``4 * width`` channels and the first layer of stages 1 and 2 has stride 2
    (32x32 -> 16x16 -> 8x8). ``batchnorm=True`` puts BatchNorm between each conv and its ReLU.
    ``init``: ``"default"`` (PyTorch's), ``"kaiming"`` (He normal, fan-in, gain sqrt(2)),
    ``"xavier"`` (Glorot normal), ``"normal:<std>"`` (N(0, std^2)); biases are zeroed by the
    non-default inits. Measured at ``depth=20, width=16``: 278,282 parameters,
    85.8 MFLOPs forward per image.

    Where it fails (``docs/models.md``, CIFAR-10 JPEG copy, 2-core CPU): with the default init the
    first conv's gradient is 1e-7 of the last conv's at depth 20 (3e-20 at depth 50) and a
    depth-20 net stays at chance for 200 SGD steps; with ``"kaiming"`` the same net trains;
    ``"normal:0.2"`` (width 8, depth 20) starts at loss 4,500 and is NaN by step 2.

    >>> PlainCNN(depth=8, width=4, init="kaiming")(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, depth: int = 20, width: int = 16, batchnorm: bool = False, init: str = "default") -> None:
        super().__init__()
        check_int("depth", depth, minimum=3)
        check_int("width", width)
        if not isinstance(init, str):
            raise ValueError(f"init={init!r} is not an init; accepted values: {', '.join(INITS)}")
        initializer = _initializer(init)
        self.depth, self.width, self.batchnorm, self.init = depth, width, check_bool("batchnorm", batchnorm), init
        layers: list[nn.Module] = []
        channels_in = 3
        for i in range(depth):
            stage = 3 * i // depth
            channels = width * 2**stage
            stride = 2 if i > 0 and stage != 3 * (i - 1) // depth else 1
            layers.append(nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=not batchnorm))
            if batchnorm:
                layers.append(nn.BatchNorm2d(channels))
            layers.append(nn.ReLU())
            channels_in = channels
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels_in, 10)
        if initializer is not None:
            self.apply(initializer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class _BasicBlock(nn.Module):
    """Two 3x3 conv + BN layers with an identity shortcut; when the shape changes the shortcut
    subsamples by 2 and zero-pads the new channels (He et al.'s option A: no parameters)."""

    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels_in, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.stride, self.pad = stride, channels - channels_in

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.pad:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.pad))
        return F.relu(out + shortcut)


class ResNet(nn.Module):
    """The CIFAR ResNet (He et al. 2016): ``depth = 6n + 2`` layers: a 3x3 conv, three stages
    of ``n`` basic blocks with ``width``, ``2 * width``, ``4 * width`` channels (stride 2 at the
    start of stages 2 and 3, parameter-free option-A shortcuts), global average pooling, linear.
    Kaiming-normal conv weights, as in the paper.

    Measured at ``depth=20, width=16`` (ResNet-20): 269,722 parameters, 81.1 MFLOPs forward
    per image (the paper lists 0.27M parameters).

    >>> ResNet(depth=8, width=4)(torch.zeros(2, 3, 32, 32)).shape
    torch.Size([2, 10])
    """

    def __init__(self, depth: int = 20, width: int = 16) -> None:
        super().__init__()
        if not isinstance(depth, int) or isinstance(depth, bool) or depth < 8 or (depth - 2) % 6:
            raise ValueError(f"depth must be 6n + 2 with n >= 1 (8, 14, 20, 32, 44, 56, 110), got {depth!r}")
        check_int("width", width)
        self.depth, self.width = depth, width
        n = (depth - 2) // 6
        self.conv = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(width)
        blocks: list[nn.Module] = []
        channels_in = width
        for stage in range(3):
            channels = width * 2**stage
            for b in range(n):
                blocks.append(_BasicBlock(channels_in, channels, stride=2 if stage > 0 and b == 0 else 1))
                channels_in = channels
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(channels_in, 10)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(F.relu(self.bn(self.conv(x))))
        return self.fc(x.mean(dim=(2, 3)))


MODELS: dict[str, type[nn.Module]] = {"seed_cnn": SeedCNN, "plain_cnn": PlainCNN, "resnet": ResNet}


def build_model(name: str, **kw: object) -> nn.Module:
    """Build a model by name: ``"seed_cnn"``, ``"plain_cnn"`` or ``"resnet"``; ``kw`` go to its class.

    >>> build_model("plain_cnn", depth=8, width=4).depth
    8
    """
    kw = check_model_kw(name, kw)
    return MODELS[name](**kw)


def check_model_kw(name: object, model_kw: object) -> dict[str, object]:
    """``model_kw`` as a dict (None: ``{}``) when ``name`` is a model of :data:`MODELS` and every key
    is an option of its class; the errors list the accepted names. The values are checked by the
    class when it is built.

    >>> check_model_kw("seed_cnn", None), check_model_kw("resnet", {"depth": 8})
    ({}, {'depth': 8})
    >>> check_model_kw("seed_cnn", {"widht": 1})
    Traceback (most recent call last):
    ...
    ValueError: model_kw ['widht'] are not options of 'seed_cnn'; accepted: width
    """
    if not isinstance(name, str) or name not in MODELS:
        raise ValueError(f"model={name!r} is not a model name; accepted values: {', '.join(MODELS)}")
    if model_kw is None:
        return {}
    accepted = [p for p in inspect.signature(MODELS[name]).parameters if p != "self"]
    if not isinstance(model_kw, dict):
        raise ValueError(f"model_kw must be None or a dict of {name!r} options ({', '.join(accepted)}), got {model_kw!r}")
    unknown = sorted(map(str, set(model_kw) - set(accepted)))
    if unknown:
        raise ValueError(f"model_kw {unknown} are not options of {name!r}; accepted: {', '.join(accepted)}")
    return dict(model_kw)


def check_model(name: object, model_kw: object) -> dict[str, object]:
    """``model_kw`` as a dict when :func:`check_model_kw` accepts it and the model builds with it: the
    model is built once on the CPU, so a bad value fails here and not in every run of a sweep. The
    random state is left as it was (the weights drawn are thrown away).

    >>> check_model("plain_cnn", {"depth": 8, "width": 4})
    {'depth': 8, 'width': 4}
    >>> check_model("seed_cnn", {"width": "x"})
    Traceback (most recent call last):
    ...
    ValueError: model_kw={'width': 'x'} does not build a 'seed_cnn': width must be a finite number > 0, got 'x'
    """
    model_kw = check_model_kw(name, model_kw)
    try:
        with torch.random.fork_rng(devices=[]):
            MODELS[name](**model_kw)  # type: ignore[index]
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"model_kw={model_kw!r} does not build a {name!r}: {err}") from err
    return model_kw


def count_params(model: nn.Module) -> int:
    """Number of parameters: sum over ``model.parameters()`` of ``p.numel()`` (trainable or not).

    >>> count_params(nn.Linear(3, 2))  # 3*2 weights + 2 biases
    8
    """
    return sum(p.numel() for p in model.parameters())


def flops_per_image(model: nn.Module) -> int:
    """Forward FLOPs for one 3x32x32 image, counting convolutions and matrix multiplies
    (one multiply-add = 2 FLOPs), measured with ``torch.utils.flop_counter.FlopCounterMode``.

    A linear layer ``n -> m`` costs ``2 * n * m``; a 3x3 conv ``c -> k`` on an ``h x w`` output
    costs ``2 * 9 * c * k * h * w``.

    >>> flops_per_image(nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)))  # 2*3072*10
    61440
    """
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(torch.zeros(1, 3, 32, 32, device=device))
    finally:
        model.train(was_training)
    return int(counter.get_total_flops())
