"""A hook for test_dist_train: records what each rank holds.

Loaded by the config the test writes (``custom_imports``), so the real
``tools/dist_train.sh`` runs unchanged. Before GALHook pops the GAL
statistics at a logging iteration it saves this rank's own (not yet
all-reduced) sums; after the run it saves this rank's model parameters,
adjuster and adjuster-optimizer state, to ``work_dir/rank{r}.pth``.
"""
import os.path as osp

import torch
from mmengine.dist import get_dist_info
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


@HOOKS.register_module()
class RankProbeHook(Hook):
    priority = 'HIGHEST'  # before GALHook (NORMAL) pops the statistics

    def before_run(self, runner) -> None:
        self.local_stats = []

    def after_train_iter(self, runner, batch_idx, data_batch=None,
                         outputs=None) -> None:
        gal_hook = next(h for h in runner.hooks
                        if type(h).__name__ == 'GALHook')
        if self.every_n_inner_iters(batch_idx, gal_hook.interval) or \
                self.end_of_epoch(runner.train_dataloader, batch_idx):
            stats = runner.optim_wrapper.learner.stats
            self.local_stats.append(
                (runner.iter + 1, stats.detach().clone().cpu()))

    def after_run(self, runner) -> None:
        rank, world_size = get_dist_info()
        wrapper = runner.optim_wrapper
        torch.save(
            dict(
                world_size=world_size,
                iters=runner.iter,
                model={k: p.detach().cpu() for k, p in
                       runner.model.module.named_parameters()},
                adjuster={k: v.cpu() for k, v in
                          wrapper.adjuster.state_dict().items()},
                adjuster_optimizer=wrapper.adjuster_optimizer.state_dict(),
                local_stats=self.local_stats),
            osp.join(runner.work_dir, f'rank{rank}.pth'))
