"""Gradient adjustment modules h_phi: R^d -> R^d.

The adjuster maps the output features z (rows of size ``dim``) to an
adjustment of the same shape. Its raw output is normalised row-wise by
:func:`mmgal.core.gal_step` (Eq. 4 of the paper), so only its direction
matters. Plain PyTorch, no framework imports.
"""
import warnings
from typing import Sequence, Tuple

import torch
from torch import Tensor, nn

from .gal_step import resolve_normalize

ADJUSTER_KINDS = ('mlp', 'cnn', 'uniform', 'normal')


def _check_dim(dim: int) -> int:
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f'dim must be a positive int (the size of the last '
                         f'dimension of z), got {dim!r}')
    return dim


def check_arch(arch: Sequence[int]) -> Tuple[int, ...]:
    """``arch`` as a tuple, or ``ValueError`` if it is not a non-empty
    sequence of positive ints."""
    try:
        arch = tuple(arch)
    except TypeError:
        raise ValueError(f'arch must be a non-empty sequence of positive '
                         f'ints, e.g. (256, 64, 32), got {arch!r}') from None
    if len(arch) == 0 or any(
            isinstance(w, bool) or not isinstance(w, int) or w < 1
            for w in arch):
        raise ValueError(f'arch must be a non-empty sequence of positive '
                         f'ints, e.g. (256, 64, 32), got {arch!r}')
    return arch


class GradientAdjuster(nn.Module):
    """The paper's MLP adjuster: ``dim -> arch[0] -> ... -> arch[-1] -> dim``.

    Linear layers with ReLU between them and no final activation (the
    adjustment may be negative in any coordinate).

    Args:
        dim (int): Size of the last dimension of z (classes for logits, 4
            for DETR boxes, 1 for scalar regression).
        arch (Sequence[int]): Hidden widths, e.g. ``(256, 64, 32)``.
    """

    kind = 'mlp'

    def __init__(self, dim: int, arch: Sequence[int] = (256, 64, 32)):
        super().__init__()
        self.dim = _check_dim(dim)
        self.arch = check_arch(arch)
        widths = (self.dim, ) + self.arch + (self.dim, )
        layers = []
        for i, (w_in, w_out) in enumerate(zip(widths[:-1], widths[1:])):
            if i > 0:
                layers.append(nn.ReLU(inplace=True))
            layers.append(nn.Linear(w_in, w_out))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)


class CNNGradientAdjuster(nn.Module):
    """1-D CNN adjuster for the MLP-vs-CNN ablation (Table VIII).

    z's rows are read as one-channel signals of length ``dim``; each entry
    of ``arch`` is a 1-D convolution (kernel ``kernel_size``, same padding)
    with that many output channels followed by ReLU, and a last
    convolution maps back to one channel, so the output has z's shape. The
    paper does not give its CNN's layout; this one is ours.

    Args:
        dim (int): Size of the last dimension of z.
        arch (Sequence[int]): Channels of the hidden convolutions.
        kernel_size (int): Odd kernel size. Defaults to 3.
    """

    kind = 'cnn'

    def __init__(self,
                 dim: int,
                 arch: Sequence[int] = (256, 64, 32),
                 kernel_size: int = 3):
        super().__init__()
        self.dim = _check_dim(dim)
        self.arch = check_arch(arch)
        if not isinstance(kernel_size, int) or kernel_size < 1 or \
                kernel_size % 2 == 0:
            raise ValueError(f'kernel_size must be a positive odd int, got '
                             f'{kernel_size!r}')
        chans = (1, ) + self.arch
        layers = []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            layers += [
                nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
                nn.ReLU(inplace=True)
            ]
        layers.append(
            nn.Conv1d(chans[-1], 1, kernel_size, padding=kernel_size // 2))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        lead = z.shape[:-1]
        out = self.net(z.reshape(-1, 1, self.dim))
        return out.reshape(*lead, self.dim)


class NoiseGradientAdjuster(nn.Module):
    """Random-noise "adjuster" for the noise ablation (Table VI).

    Replaces h_phi(z) with noise of z's shape; :func:`gal_step` still
    normalises it by Eq. 4. It has no parameters, so nothing is learned.

    Args:
        dim (int): Size of the last dimension of z.
        distribution (str): ``'uniform'`` (U(-1, 1), zero mean) or
            ``'normal'`` (N(0, 1)).
    """

    def __init__(self, dim: int, distribution: str = 'normal'):
        super().__init__()
        self.dim = _check_dim(dim)
        if distribution not in ('uniform', 'normal'):
            raise ValueError(f"distribution must be 'uniform' or 'normal', "
                             f'got {distribution!r}')
        self.kind = distribution

    def forward(self, z: Tensor) -> Tensor:
        if self.kind == 'normal':
            return torch.randn_like(z)
        return torch.rand_like(z).mul_(2).sub_(1)


def warn_if_unlearnable(kind: str, dim: int, normalize: str) -> bool:
    """Warn (and return True) where a learned adjuster can get no gradient:
    one feature (d = 1) with Eq. 4's row normalisation, where a/|a| is
    sign(a), whose derivative is zero."""
    if kind not in ('mlp', 'cnn') or resolve_normalize(normalize,
                                                       dim) != 'row' or \
            dim != 1:
        return False
    warnings.warn(
        "a learned adjuster for d = 1 with normalize='row' gets no "
        'gradient: Eq. 4 normalises each row of the adjustment, and for one '
        "feature a/|a| is sign(a), whose derivative is zero. It keeps its "
        "initial weights, and GAL scales each sample's gradient by "
        "1 +- sigma with the sign they give; normalize='batch' (or 'auto') "
        'lets it learn (docs/results/remainder_precision.md)',
        UserWarning, stacklevel=2)
    return True


def build_adjuster(kind: str = 'mlp',
                   dim: int = 1,
                   arch: Sequence[int] = (256, 64, 32)) -> nn.Module:
    """Build an adjuster by kind.

    Args:
        kind (str): One of ``'mlp'`` (the paper's default), ``'cnn'``,
            ``'uniform'``, ``'normal'``.
        dim (int): Size of the last dimension of z.
        arch (Sequence[int]): Hidden widths (MLP) or channels (CNN); unused
            by the noise kinds.
    """
    if kind == 'mlp':
        return GradientAdjuster(dim, arch)
    if kind == 'cnn':
        return CNNGradientAdjuster(dim, arch)
    if kind in ('uniform', 'normal'):
        return NoiseGradientAdjuster(dim, kind)
    raise ValueError(f'adjuster kind must be one of {ADJUSTER_KINDS}, got '
                     f'{kind!r}')
