"""Video stream backbones: one independent 3D CNN per stream.

The method's streams use (2+1)D residual blocks of *dense* convolutions
(a 1x3x3 spatial then a 3x1x1 temporal convolution). X3D's depthwise 3x3x3
convolutions need fewer multiply-adds but do little arithmetic per byte, so on
GPUs (and in TensorRT, whose depthwise 3D kernels are memory-bound) they run
far below peak; dense (2+1)D convolutions map to implicit-GEMM tensor-core
kernels in FP16 and INT8 and keep the runtime close to the MAC count. The
baselines use a 3D-ResNet-50 bottleneck and X3D blocks for the paper's
comparison. Every normalisation is BatchNorm, which folds into the preceding
convolution at export.
"""

from __future__ import annotations

from torch import Tensor, nn

from .config import StreamConfig


def _conv_bn(
    cin: int,
    cout: int,
    kernel: tuple[int, int, int],
    stride: tuple[int, int, int] = (1, 1, 1),
    groups: int = 1,
    act: bool = True,
) -> nn.Sequential:
    pad = tuple(k // 2 for k in kernel)
    layers: list[nn.Module] = [
        nn.Conv3d(cin, cout, kernel, stride, pad, groups=groups, bias=False),
        nn.BatchNorm3d(cout),
    ]
    if act:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


def _shortcut(cin: int, cout: int, stride: tuple[int, int, int]) -> nn.Module:
    if cin == cout and stride == (1, 1, 1):
        return nn.Identity()
    return _conv_bn(cin, cout, (1, 1, 1), stride, act=False)


class R2Plus1DBlock(nn.Module):
    """Residual block of two (2+1)D convolutions: ``[B, Cin, T, H, W] -> [B, Cout, T', H', W']``.

    The spatial convolution strides in H, W and the temporal one in T. The
    intermediate width equals ``cout`` (not R(2+1)D's parameter-matched width).
    """

    def __init__(self, cin: int, cout: int, stride_t: int, stride_s: int):
        super().__init__()
        self.conv1 = nn.Sequential(
            _conv_bn(cin, cout, (1, 3, 3), (1, stride_s, stride_s)),
            _conv_bn(cout, cout, (3, 1, 1), (stride_t, 1, 1)),
        )
        self.conv2 = nn.Sequential(
            _conv_bn(cout, cout, (1, 3, 3)),
            _conv_bn(cout, cout, (3, 1, 1), act=False),
        )
        self.shortcut = _shortcut(cin, cout, (stride_t, stride_s, stride_s))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class Bottleneck3D(nn.Module):
    """3D-ResNet bottleneck (1x1x1, 3x3x3, 1x1x1); ``cout`` is the output width, mid = cout/4."""

    def __init__(self, cin: int, cout: int, stride_t: int, stride_s: int, expansion: float = 4.0):
        super().__init__()
        mid = int(cout / expansion)
        self.body = nn.Sequential(
            _conv_bn(cin, mid, (1, 1, 1)),
            _conv_bn(mid, mid, (3, 3, 3), (stride_t, stride_s, stride_s)),
            _conv_bn(mid, cout, (1, 1, 1), act=False),
        )
        self.shortcut = _shortcut(cin, cout, (stride_t, stride_s, stride_s))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class SqueezeExcite(nn.Module):
    """Channel gating from the space-time mean; ``[B, C, T, H, W]`` in and out."""

    def __init__(self, channels: int, ratio: float = 1 / 16):
        super().__init__()
        hidden = max(8, int(channels * ratio))
        self.fc1 = nn.Conv3d(channels, hidden, 1)
        self.fc2 = nn.Conv3d(hidden, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = x.mean(dim=(2, 3, 4), keepdim=True)
        return x * self.fc2(self.fc1(s).relu()).sigmoid()


class X3DBlock(nn.Module):
    """X3D bottleneck: 1x1x1 expand, depthwise 3x3x3, optional squeeze-excite, SiLU, 1x1x1."""

    def __init__(
        self, cin: int, cout: int, stride_t: int, stride_s: int, expansion: float, se: bool
    ):
        super().__init__()
        mid = int(cout * expansion)
        self.expand = _conv_bn(cin, mid, (1, 1, 1))
        self.depthwise = _conv_bn(
            mid, mid, (3, 3, 3), (stride_t, stride_s, stride_s), groups=mid, act=False
        )
        self.se = SqueezeExcite(mid) if se else nn.Identity()
        self.act = nn.SiLU(inplace=True)
        self.project = _conv_bn(mid, cout, (1, 1, 1), act=False)
        self.shortcut = _shortcut(cin, cout, (stride_t, stride_s, stride_s))
        self.out_act = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        h = self.act(self.se(self.depthwise(self.expand(x))))
        return self.out_act(self.project(h) + self.shortcut(x))


def _pool_stem(channels: int, stride: int) -> nn.Sequential:
    """``[B, 3, T, H, W] -> [B, channels, T, H/stride, W/stride]``: per frame, a 3x3
    convolution then a 2x2 max-pool, log2(stride) times, widths doubling up to ``channels``.

    Every pixel reaches a full-resolution convolution and the max-pool keeps the
    strongest local response, so an object a few stride-cells wide keeps its
    outline (see ``StreamConfig.stem``).
    """
    levels = stride.bit_length() - 1
    widths = [max(1, channels >> (levels - 1 - i)) for i in range(levels)]
    layers: list[nn.Module] = []
    cin = 3
    for cout in widths:
        layers += [
            _conv_bn(cin, cout, (1, 3, 3)),
            nn.MaxPool3d((1, 2, 2), (1, 2, 2), ceil_mode=True),
        ]
        cin = cout
    return nn.Sequential(*layers)


class StreamBackbone(nn.Module):
    """One stream's 3D CNN: ``[B, 3, T, H, W]`` (normalised) -> ``[B, C_s, T_s, H_s, W_s]``."""

    def __init__(self, cfg: StreamConfig):
        super().__init__()
        self.cfg = cfg
        s, c0 = cfg.stem_stride, cfg.stem_channels
        if cfg.stem == "pool":
            self.stem = _pool_stem(c0, s)
        elif cfg.backbone == "r2plus1d":
            self.stem = nn.Sequential(
                _conv_bn(3, c0, (1, 7, 7), (1, s, s)), _conv_bn(c0, c0, (3, 1, 1))
            )
        elif cfg.backbone == "resnet3d":
            # A stride-4 stem is the classic conv(2) + max-pool(2).
            conv_s = 2 if s == 4 else s
            stem: list[nn.Module] = [_conv_bn(3, c0, (3, 7, 7), (1, conv_s, conv_s))]
            if s == 4:
                stem.append(nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)))
            self.stem = nn.Sequential(*stem)
        else:  # x3d
            self.stem = nn.Sequential(
                _conv_bn(3, c0, (1, 3, 3), (1, s, s), act=False),
                _conv_bn(c0, c0, (5, 1, 1), groups=c0),
            )
        stages: list[nn.Module] = []
        cin = c0
        for cout, n, ss, ts in zip(
            cfg.channels, cfg.blocks, cfg.spatial_strides, cfg.temporal_strides, strict=True
        ):
            blocks: list[nn.Module] = []
            for i in range(n):
                st, sp = (ts, ss) if i == 0 else (1, 1)
                if cfg.backbone == "r2plus1d":
                    blocks.append(R2Plus1DBlock(cin, cout, st, sp))
                elif cfg.backbone == "resnet3d":
                    blocks.append(Bottleneck3D(cin, cout, st, sp, cfg.expansion))
                else:
                    blocks.append(X3DBlock(cin, cout, st, sp, cfg.expansion, se=i % 2 == 0))
                cin = cout
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.Sequential(*stages)

    def zero_init_residual(self) -> None:
        """Zero the scale of every residual branch's last BatchNorm (Goyal et al. 2017).

        Each block then starts as its shortcut, so at initialisation the stream is a
        shallow network whose gradients reach the stem undamped; the branches grow in
        as they learn. An initialisation choice for training only.
        """
        for block in self.stages.modules():
            if isinstance(block, R2Plus1DBlock):
                last = block.conv2[-1]
            elif isinstance(block, Bottleneck3D):
                last = block.body[-1]
            elif isinstance(block, X3DBlock):
                last = block.project
            else:
                continue
            nn.init.zeros_(last[1].weight)

    def forward(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x))
