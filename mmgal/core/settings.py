"""GAL's settings: one frozen object, validated once, shared by the
wrapper, the regression module and the benchmarks. Two presets fill what
users rarely set: ``'default'`` (this project's) and ``'release'`` (the
authors' release); a field given explicitly wins over the preset."""
from dataclasses import dataclass, fields
from typing import Optional, Tuple, Union

from .adjusters import ADJUSTER_KINDS, check_arch
from .gal_step import check_choice, check_gal_args, check_real, is_real

# 'auto': compile where torch.compile works here; 'compile': try anywhere
# (both run eagerly, with one warning, where it fails); 'eager': never.
FAST_MODES = ('auto', 'compile', 'eager')
# adjuster_optimizer='model': the model optimizer's type and settings.
MODEL_OPTIMIZER = 'model'
PRESETS = {
    'default': dict(remainder='exact', objective='normalized',
                    normalize='auto',
                    adjuster_optimizer=dict(type='Adam', lr=1e-3)),
    'release': dict(remainder='reference', objective='abs', normalize='row',
                    adjuster_optimizer=MODEL_OPTIMIZER),
}
# Fields that are gone, and what replaces them.
RETIRED = {
    'gal_dtype': "GAL's maths run in float64 where R is a difference of two "
                 'losses and in the closed form otherwise: remove the field',
    'adjuster_lr_ratio': "an adjuster_optimizer without 'lr' (or 'model') "
                         "follows the head's lr; give "
                         "adjuster_optimizer=dict(type='Adam', lr=...) for "
                         'a fixed one',
    'lr_ratio': "an adjuster_optimizer without 'lr' follows the model's lr: "
                "adjuster_optimizer=dict(type='Adam')",
    'kind': "renamed 'adjuster'",
}
_RETIRED_VALUES = {
    ('remainder', 'taylor'): "remainder='exact' (the closed form, else the "
                             'difference of losses in float64)',
}


@dataclass(frozen=True)
class GALSettings:
    """What a user sets for GAL, checked once (``ValueError`` naming the
    field and the allowed values).

    Examples:
        >>> GALSettings(sigma=0.01)                  # this project's default
        >>> GALSettings(sigma=0.01, preset='release')  # the authors' release
        >>> # in a config, the same fields on the optimizer wrapper:
        >>> optim_wrapper = dict(type='GALOptimWrapper', preset='release')

    Args:
        sigma (float): Size of the adjustment (Eq. 4), >= 0. Defaults to 0.01.
        gamma (float): Tentative learning-rate scale, > 0. Defaults to 1.
        arch (Sequence[int]): Hidden widths (MLP) or channels (CNN).
        adjuster (str): ``'mlp'``, ``'cnn'``, ``'uniform'`` or ``'normal'``
            (the last two: fixed noise, the paper's Table VI control).
        policy (str): Algorithm 1's update policy: ``'le'`` (default),
            ``'lt'``, ``'always'`` or ``'never'``.
        preset (str): ``'default'`` or ``'release'``: fills the four
            fields below left as None.
        remainder (str, optional): ``'exact'`` (R from the loss's closed
            form, else the difference of losses in float64) or
            ``'reference'`` (the release's: that difference in the
            output's dtype, the first-order term averaged over rows).
        objective (str, optional): ``'normalized'`` (|R| / (eta |g~|)^2,
            denominator detached) or ``'abs'`` (|R|, the paper's).
        normalize (str, optional): Eq. 4's norms: ``'auto'`` (per row for
            d > 1, over the batch for d = 1), ``'row'`` or ``'batch'``.
        adjuster_optimizer (dict | str, optional): The adjuster's
            optimizer config without ``params``; with ``lr`` it keeps that
            lr, without it follows the head's lr. ``'model'``: the model
            optimizer's type and settings at the head's lr.
        tentative_lr (float, optional): A fixed eta; None: the head's lr.
        enabled (bool): Off, training is exactly that without GAL.
        seed (int): The adjuster's seed (a private generator).
        fast (str): ``'auto'``, ``'compile'`` or ``'eager'``: the same
            update up to float rounding, at different host cost.
    """
    sigma: float = 0.01
    gamma: float = 1.0
    arch: Tuple[int, ...] = (256, 64, 32)
    adjuster: str = 'mlp'
    policy: str = 'le'
    preset: str = 'default'
    remainder: Optional[str] = None
    objective: Optional[str] = None
    normalize: Optional[str] = None
    adjuster_optimizer: Union[None, str, dict] = None
    tentative_lr: Optional[float] = None
    enabled: bool = True
    seed: int = 0
    fast: str = 'auto'

    @classmethod
    def from_dict(cls, cfg: dict, where: str = 'GAL') -> 'GALSettings':
        """Settings from a config's keys: a retired or unknown key is a
        ``ValueError`` that names it and its replacement (or the fields)."""
        names = [f.name for f in fields(cls)]
        for key in cfg:
            if key in RETIRED:
                raise ValueError(f'{where}: {key} was retired: {RETIRED[key]}')
            if key not in names:
                raise ValueError(f'{where}: unknown setting {key!r}; GAL '
                                 f'takes {names}')
        return cls(**cfg)

    def __post_init__(self):
        check_choice('preset', self.preset, tuple(PRESETS))
        for key, value in PRESETS[self.preset].items():
            if getattr(self, key) is None:
                object.__setattr__(self, key, value)
        for (key, old), new in _RETIRED_VALUES.items():
            if getattr(self, key) == old:
                raise ValueError(f'{key}={old!r} was retired: use {new}')
        check_gal_args(self.sigma, self.gamma, self.policy, self.remainder,
                       self.objective, self.normalize)
        check_choice('adjuster', self.adjuster, ADJUSTER_KINDS)
        check_choice('fast', self.fast, FAST_MODES)
        if self.adjuster in ('mlp', 'cnn'):
            object.__setattr__(self, 'arch', check_arch(self.arch))
        if self.tentative_lr is not None:
            if not is_real(self.tentative_lr):
                raise ValueError("tentative_lr must be None (the head's "
                                 'current lr) or a finite number > 0, got '
                                 f'{self.tentative_lr!r}')
            # 0 would be gamma=0 in disguise: R = 0, g~ adopted every step.
            object.__setattr__(self, 'tentative_lr', check_real(
                'tentative_lr', self.tentative_lr, strict=True))
        for name, kind in (('enabled', bool), ('seed', int)):
            value = getattr(self, name)
            if not isinstance(value, kind) or (
                    kind is int and isinstance(value, bool)):
                raise ValueError(f'{name} must be a {kind.__name__}, got '
                                 f'{value!r} ({type(value).__name__})')
        if not -2**63 <= self.seed < 2**64:
            raise ValueError('seed must be an int in [-2**63, 2**64) '
                             f'(torch.manual_seed), got {self.seed!r}')
        object.__setattr__(self, 'adjuster_optimizer',
                           _check_optimizer(self.adjuster_optimizer))
        object.__setattr__(self, 'sigma', float(self.sigma))
        object.__setattr__(self, 'gamma', float(self.gamma))

    def step_args(self) -> dict:
        """The keyword arguments of :func:`~mmgal.core.gal_step` these
        settings fix."""
        return dict(sigma=self.sigma, gamma=self.gamma, policy=self.policy,
                    remainder=self.remainder, objective=self.objective,
                    normalize=self.normalize)


def _check_optimizer(cfg):
    if cfg == MODEL_OPTIMIZER:
        return cfg
    if not isinstance(cfg, dict) or 'type' not in cfg:
        raise ValueError(
            "adjuster_optimizer must be None (the preset's), 'model' (the "
            "model optimizer's type and settings) or a dict with a 'type' "
            f"(e.g. dict(type='Adam', lr=1e-3)), got {cfg!r}")
    if 'params' in cfg:
        raise ValueError("adjuster_optimizer must not name params: the "
                         "adjuster's parameters are added by GAL")
    if 'lr' in cfg:
        check_real('adjuster_optimizer.lr', cfg['lr'])
    return dict(cfg)
