import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch

from mmgal.engine import GALOptimWrapper

WORKER = osp.join(osp.dirname(osp.abspath(__file__)), 'ddp_worker.py')


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_process_gloo_ddp_keeps_adjusters_and_models_identical(
        digits_root, tmp_path):
    cmd = [
        sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
        '--master_addr=127.0.0.1', f'--master_port={free_port()}', WORKER,
        digits_root, str(tmp_path)
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    r0 = torch.load(str(tmp_path / 'rank0.pth'))
    r1 = torch.load(str(tmp_path / 'rank1.pth'))
    assert r0['world_size'] == r1['world_size'] == 2
    # 128 images, 16 per rank per step: 4 steps.
    assert r0['iters'] == 4
    for part in ('model', 'adjuster'):
        assert r0[part].keys() == r1[part].keys()
        for k in r0[part]:
            assert torch.equal(r0[part][k], r1[part][k]), (part, k)
    # The adjuster was trained (it left its seeded initial weights).
    init = GALOptimWrapper(torch.optim.SGD([torch.nn.Parameter(
        torch.ones(1))], lr=0.1), arch=(100, 32, 16))
    init.setup_adjuster(10)
    assert any(not torch.equal(v, init.adjuster.state_dict()[k])
               for k, v in r0['adjuster'].items())
