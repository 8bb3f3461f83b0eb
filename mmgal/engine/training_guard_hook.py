import logging
import math
from typing import Optional

import torch
from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.registry import HOOKS

from mmgal.utils.checkpoint import (checkpoint_hook, confine_runtime_info,
                                    strip_executable_meta)

DATA_BATCH = Optional[dict]


class NonFiniteTrainingError(RuntimeError):
    """Training produced a non-finite loss or non-finite weights."""


@HOOKS.register_module()
class TrainingGuardHook(Hook):
    """Keeps a diverged run from running on silently or losing its good
    checkpoints, and a checkpoint's code from running.
    ``tools/train.py`` adds it to every config:

    - on load, ``meta['config']`` (Python text ``Runner.resume`` would
      execute) is removed and ``runtime_info`` confined to this run's files;
    - a non-finite loss (read from the MessageHub: no extra host read) is
      reported once and, with ``stop``, stops the run naming the last
      checkpoint with finite weights;
    - where a checkpoint is due, non-finite weights stop the run before
      mmengine rotates ``max_keep_ckpts`` (it deletes before it writes);
      with ``stop=False`` the last finite checkpoint leaves the rotation.

    Examples:
        >>> # What tools/train.py adds; in a config, to keep training on:
        >>> custom_hooks = [dict(type='TrainingGuardHook', stop=False)]

    Args:
        stop (bool): Stop at the first non-finite loss or before writing a
            checkpoint with non-finite weights. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, stop: bool = True):
        if not isinstance(stop, bool):
            raise ValueError(f'TrainingGuardHook: stop must be a bool, got '
                             f'{stop!r}')
        self.stop = stop
        self._warned_loss = False
        self._last_finite: Optional[int] = None

    def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
        strip_executable_meta(checkpoint)
        confine_runtime_info(checkpoint, runner)

    def after_train_iter(self,
                         runner,
                         batch_idx: int,
                         data_batch: DATA_BATCH = None,
                         outputs: Optional[dict] = None) -> None:
        hook = checkpoint_hook(runner)
        if not getattr(self, '_by_epoch', True) and hook is not None and (
                self.every_n_train_iters(runner, hook.interval) or (
                    hook.save_last and self.is_last_train_iter(runner))):
            self._guard_rotation(runner)  # a checkpoint is due now
        hub = runner.message_hub
        if 'train/loss' not in hub.log_scalars:
            return
        loss = hub.get_scalar('train/loss').current()
        if math.isfinite(loss):
            return
        where = f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})'
        last = self._last_checkpoint_text()
        if not self._warned_loss:
            self._warned_loss = True
            print_log(
                f'TrainingGuardHook: the training loss is {loss} at {where}'
                f'; {last}.' + ('' if self.stop else ' Training goes on '
                                '(stop=False).'),
                logger='current', level=logging.ERROR)
        if self.stop:
            raise NonFiniteTrainingError(
                f'training diverged: the loss is {loss} at {where}; {last}. '
                'Lower the learning rate (or clip gradients) and resume from '
                "that checkpoint; TrainingGuardHook(stop=False) trains on")

    def after_train_epoch(self, runner) -> None:
        if getattr(self, '_by_epoch', True):
            self._guard_rotation(runner)

    def _guard_rotation(self, runner) -> None:
        """Before the CheckpointHook rotates (it deletes before it writes):
        stop, or keep the last finite checkpoint, where the weights are
        not finite. One host read, where a checkpoint is due."""
        hook = checkpoint_hook(runner)
        if hook is None or getattr(hook, 'max_keep_ckpts', -1) <= 0:
            return
        model = runner.model.module if hasattr(runner.model, 'module') \
            else runner.model
        flags = [torch.isfinite(v).all() for v in model.state_dict().values()
                 if torch.is_tensor(v) and v.is_floating_point()]
        if not flags or bool(torch.stack(flags).all()):
            return
        last = self._last_checkpoint_text()
        step = runner.epoch + 1 if self._unit() == 'epoch' else runner.iter
        if self.stop:
            raise NonFiniteTrainingError(
                f'the model weights are not finite at {self._unit()} {step}:'
                f' no checkpoint is written; {last}. Lower the learning rate'
                ' (or clip gradients) and resume from that checkpoint')
        self._keep_out_of_rotation(runner, hook)

    def _keep_out_of_rotation(self, runner, hook) -> None:
        ids = getattr(hook, 'keep_ckpt_ids', None)
        if ids is not None and self._last_finite in ids:
            ids.remove(self._last_finite)
            runner.message_hub.update_info('keep_ckpt_ids', list(ids))

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        state = checkpoint.get('state_dict', {})
        finite = all(bool(torch.isfinite(v).all()) for v in state.values()
                     if torch.is_tensor(v) and v.is_floating_point())
        step = self._step(checkpoint)
        if finite:
            self._last_finite = step
            return
        last = self._last_checkpoint_text()
        if self.stop:
            raise NonFiniteTrainingError(
                f'the model weights are not finite at {self._unit()} {step}: '
                f'this checkpoint is not written; {last}. Lower the learning '
                'rate (or clip gradients) and resume from that checkpoint')
        hook = checkpoint_hook(runner)
        if hook is not None:
            self._keep_out_of_rotation(runner, hook)
        print_log(
            f'TrainingGuardHook: the model weights are not finite at '
            f'{self._unit()} {step}; the checkpoint is written (stop=False)'
            f' and the last finite one ({self._unit()} {self._last_finite})'
            ' is kept out of max_keep_ckpts\' rotation.',
            logger='current', level=logging.ERROR)

    def before_run(self, runner) -> None:
        hook = checkpoint_hook(runner)
        self._by_epoch = getattr(hook, 'by_epoch', True)

    def _unit(self) -> str:
        return 'epoch' if getattr(self, '_by_epoch', True) else 'iteration'

    def _step(self, checkpoint: dict) -> int:
        meta = checkpoint.get('meta', {})
        return meta.get('epoch') if self._unit() == 'epoch' else meta.get(
            'iter')

    def _last_checkpoint_text(self) -> str:
        if self._last_finite is None:
            return 'no checkpoint with finite weights was written'
        return (f'the last checkpoint with finite weights is '
                f'{self._unit()} {self._last_finite}')
