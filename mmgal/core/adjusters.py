"""Gradient adjusters h_phi: R^d -> R^d, applied to z's rows; gal_step
normalises their output (Eq. 4), so only its direction matters."""
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
    """``arch`` as a tuple; ``ValueError`` unless positive ints."""
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

    Linear layers with ReLU between them, no final activation.

    Args:
        dim (int): z's last dimension (classes, 4 for DETR boxes, ...).
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

    z's rows as one-channel signals: a same-padded convolution with ReLU
    per entry of ``arch`` (its channels), then one back to one channel. The
    paper does not give its layout; this one is ours.

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

    Noise of z's shape (normalised by Eq. 4); nothing is learned.

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
    """Warn (True) where a learned adjuster gets no gradient: d = 1 with
    row normalisation (a/|a| is sign(a))."""
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
    """An adjuster of ``kind`` (:data:`ADJUSTER_KINDS`) for z's last
    dimension ``dim``; ``arch``: the MLP's widths or the CNN's channels."""
    if kind == 'mlp':
        return GradientAdjuster(dim, arch)
    if kind == 'cnn':
        return CNNGradientAdjuster(dim, arch)
    if kind in ('uniform', 'normal'):
        return NoiseGradientAdjuster(dim, kind)
    raise ValueError(f'adjuster kind must be one of {ADJUSTER_KINDS}, got '
                     f'{kind!r}')
