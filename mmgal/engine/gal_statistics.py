"""GAL's logged statistics: from the sums its steps keep on the device
(``GALOutput.stats``, named by :data:`mmgal.core.STAT_NAMES`) to the
floats ``GALHook`` logs, once per logging interval (one host read; one
all-reduce under DDP), with the adjuster's weight motion."""
import math
from typing import Dict, Optional, Sequence, Tuple

import torch
import torch.distributed as torch_dist
from mmengine.dist import get_world_size
from torch import Tensor, nn

from mmgal.core import STAT_NAMES


def summarize(sums: Sequence[float]) -> Dict[str, float]:
    """The statistics from the interval's sums (:data:`STAT_NAMES`): means
    over the finite steps, ``adopt_rate`` over all, ``nonfinite`` a count,
    the probe's over the probed steps. Empty without steps."""
    sums = dict(zip(STAT_NAMES, sums))
    count = sums['steps']
    if count == 0:
        return {}
    n_finite = count - sums['nonfinite']

    def finite_mean(key):
        return sums[key] / n_finite if n_finite > 0 else float('nan')

    res = {k: finite_mean(k)
           for k in ('remainder', 'cos_sim', 'tentative_gain')}
    abs_mean = finite_mean('abs_remainder')
    res['log10_remainder'] = (math.log10(abs_mean) if abs_mean > 0 else
                              float('-inf') if abs_mean == 0 else
                              float('nan'))
    res['adopt_rate'] = sums['adopt_rate'] / count
    res['nonfinite'] = sums['nonfinite']
    if sums['probes'] > 0:
        res['remainder_ratio'] = (
            sums['probe_learned'] / sums['probe_initial']
            if sums['probe_initial'] > 0 else float('nan'))
        res['cos_init'] = sums['cos_init'] / sums['probes']
    return res


def _sine(w: Tensor, ref: Optional[Tensor]) -> Optional[Tensor]:
    """sin of the angle between two weight vectors: the change of w
    beyond a common rescaling of ref (0 for w = c * ref)."""
    if ref is None:
        return None
    cos = torch.nn.functional.cosine_similarity(
        w.double(), ref.double(), dim=0, eps=1e-30)
    return (1 - cos.clamp(-1, 1)**2).clamp_min(0).sqrt()


def flat_weights(adjuster: Optional[nn.Module]) -> Optional[Tensor]:
    """The adjuster's weights as one float32 vector (None without any)."""
    params = [p.detach().reshape(-1).float()
              for p in adjuster.parameters()] if adjuster is not None else []
    return torch.cat(params) if params else None


def read_stats(stats: Optional[Tensor], adjuster: Optional[nn.Module],
               initial: Optional[nn.Module],
               last_weights: Optional[Tensor]
               ) -> Tuple[Dict[str, float], Optional[Tensor]]:
    """(the logged statistics, the adjuster's weights now) from the
    interval's summed ``stats`` (None: no step on this rank).

    Keys: ``remainder`` (mean |R| / (eta |g~|)^2), ``log10_remainder``
    (of the mean |R|), ``adopt_rate``, ``cos_sim`` (g vs the adjustment),
    ``nonfinite`` (count), ``tentative_gain`` (mean l - l'); for a learned
    adjuster ``adjuster_update`` / ``adjuster_drift`` (the sine of the angle
    of its weights with ``last_weights`` / its initial ones: change beyond
    a rescaling, which Eq. 4 ignores) and, on probed intervals,
    ``remainder_ratio`` (|R| with the current over the initial adjuster,
    same batches) and ``cos_init`` (their adjustments' cosine).
    """
    weights = flat_weights(adjuster) if initial is not None else None
    if get_world_size() > 1 and adjuster is not None:
        if stats is None:
            # This rank ran no GAL step; it still joins the collective.
            param = next(adjuster.parameters(), None)
            stats = torch.zeros(
                len(STAT_NAMES),
                device=param.device if param is not None else 'cpu')
        torch_dist.all_reduce(stats)
    if stats is None:
        return {}, last_weights
    extra = []
    if weights is not None:
        # Against the weights at the last log, and at the start.
        extra = [_sine(weights, w)
                 for w in (last_weights, flat_weights(initial))]
    else:
        weights = last_weights
    vals = torch.cat([stats.double().reshape(-1)] + [
        x.reshape(1).to(stats.device) for x in extra if x is not None
    ]).cpu().tolist()
    res = summarize(vals[:len(STAT_NAMES)])
    rest = iter(vals[len(STAT_NAMES):])
    if res:
        for key, x in zip(('adjuster_update', 'adjuster_drift'), extra):
            if x is not None:
                res[key] = next(rest)
    return res, weights
