"""Worker for test_ddp: one rank of a 2-process gloo run on CPU.

Launched by torch.distributed.run. mmengine's own pytorch launcher assumes
CUDA (``torch.cuda.set_device``, ``device_ids``), so this worker opens the
gloo group itself and wraps the model in a DDP subclass without
device_ids; everything else is the stock Runner path.
"""
import os
import sys

import torch
import torch.distributed as dist
from mmengine.model import MMDistributedDataParallel
from mmengine.registry import MODEL_WRAPPERS
from mmengine.runner import Runner

sys.path.insert(0, os.path.dirname(os.path.dirname(__file__)))
from mm_helpers import digits_cfg  # noqa: E402

import mmgal  # noqa: E402,F401


@MODEL_WRAPPERS.register_module()
class CPUDistributedDataParallel(MMDistributedDataParallel):

    def __init__(self, module, device_ids=None, **kwargs):
        super().__init__(module=module, device_ids=None, **kwargs)


def main(data_root, work_dir):
    dist.init_process_group('gloo')
    rank = dist.get_rank()
    cfg = digits_cfg(data_root, work_dir, n_train=128, epochs=1,
                     batch_size=16, sigma=0.1)
    cfg.launcher = 'pytorch'
    cfg.model_wrapper_cfg = dict(type='CPUDistributedDataParallel')
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    runner = Runner.from_cfg(cfg)
    runner.train()
    wrapper = runner.optim_wrapper
    torch.save(
        dict(
            # Parameters only: mmengine's DDP does not broadcast buffers,
            # so BN running statistics are per rank by design.
            model={
                k: p.detach()
                for k, p in runner.model.module.named_parameters()
            },
            adjuster=wrapper.adjuster.state_dict(),
            world_size=dist.get_world_size(),
            iters=runner.iter),
        os.path.join(work_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
