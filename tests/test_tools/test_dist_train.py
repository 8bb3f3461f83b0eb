"""The real ``tools/dist_train.sh`` with 2 CPU processes (gloo)."""
import math
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mm_helpers import DIGITS_GAL, read_scalars

from mmgal.engine import GALOptimWrapper
from mmgal.engine.gal_statistics import summarize

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
HERE = osp.dirname(osp.abspath(__file__))


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_dist_train_sh_trains_one_model_with_one_adjuster_on_cpu(
        digits_root, tmp_path):
    # The repo's digits GAL config as a user runs it, plus the probe hook
    # that records what each rank holds.
    cfg = tmp_path / 'digits_gal_probe.py'
    cfg.write_text(
        f'_base_ = {DIGITS_GAL!r}\n'
        "custom_imports = dict(imports=['mmgal', 'dist_probe'], "
        'allow_failed_imports=False)\n'
        "custom_hooks = [dict(type='RankProbeHook')]\n")
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PORT=str(free_port()),
               # The interpreter running the tests (its venv), as `python`
               # would be in the user's activated environment.
               PYTHON=sys.executable,
               PYTHONPATH=HERE + os.pathsep + os.environ.get('PYTHONPATH', ''),
               # CPU processes with gloo, also on a machine with GPUs.
               CUDA_VISIBLE_DEVICES='')
    cmd = [
        'bash', osp.join(REPO, 'tools', 'dist_train.sh'), str(cfg), '2',
        '--work-dir', str(work_dir), '--cfg-options',
        f'train_dataloader.dataset.data_root={digits_root}',
        f'val_dataloader.dataset.data_root={digits_root}',
        f'test_dataloader.dataset.data_root={digits_root}',
        'train_dataloader.dataset.indices=320', 'train_cfg.max_epochs=1',
        'default_hooks.logger.interval=2'
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900,
                         env=env, cwd=str(tmp_path))
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-4000:]
    assert 'gloo' in res.stdout + res.stderr

    r0 = torch.load(str(work_dir / 'rank0.pth'), weights_only=False)
    r1 = torch.load(str(work_dir / 'rank1.pth'), weights_only=False)
    assert r0['world_size'] == r1['world_size'] == 2
    # 320 images, 32 per rank per step: 5 steps on each rank.
    assert r0['iters'] == r1['iters'] == 5
    ckpt = torch.load(str(work_dir / 'epoch_1.pth'))
    # One model: both ranks and the checkpoint hold the same parameters.
    for k, v in r0['model'].items():
        assert torch.equal(v, r1['model'][k]), k
        assert torch.equal(v, ckpt['state_dict'][k]), k
    # One adjuster, trained, the same on both ranks and in the checkpoint.
    gal = ckpt['optimizer']['gal']
    for k, v in r0['adjuster'].items():
        assert torch.equal(v, r1['adjuster'][k]), k
        assert torch.equal(v, gal['adjuster'][k]), k
    init = GALOptimWrapper(torch.optim.SGD([torch.nn.Parameter(
        torch.ones(1))], lr=0.1), arch=(100, 32, 16))  # the config's arch
    init.setup_adjuster(10)
    assert any(not torch.equal(v, init.adjuster.state_dict()[k])
               for k, v in r0['adjuster'].items()), 'adjuster not trained'
    for s0, s1 in zip(r0['adjuster_optimizer']['state'].values(),
                      r1['adjuster_optimizer']['state'].values()):
        for k in s0:
            assert torch.equal(torch.as_tensor(s0[k]),
                               torch.as_tensor(s1[k])), k

    # The logged GAL scalars are the all-reduced statistics: each rank's
    # own sums differ (different data), the log shows their pooled mean.
    rows = {r['iter']: r for r in read_scalars(str(work_dir)) if 'loss' in r}
    assert [it for it, _ in r0['local_stats']] == [
        it for it, _ in r1['local_stats']]
    # LoggerHook skips the last, partial interval (ignore_last).
    logged_stats = [(a, b) for (it, a), (_, b) in zip(
        r0['local_stats'], r1['local_stats']) if it in rows]
    assert [it for it, _ in r0['local_stats'] if it in rows] == [2, 4]
    for it, (a, b) in zip((2, 4), logged_stats):
        assert not torch.equal(a, b)
        pooled = summarize((a + b).double().tolist())
        mine = summarize(a.double().tolist())
        assert pooled['remainder'] != mine['remainder']
        for key, expected in pooled.items():
            logged = rows[it][f'gal/{key}']
            assert math.isclose(logged, expected, rel_tol=1e-5,
                                abs_tol=1e-12), (it, key, logged, expected)


@pytest.mark.parametrize('nproc', ['0', 'two', '-1'])
def test_dist_train_sh_names_a_bad_process_count(nproc):
    res = subprocess.run(['bash', osp.join(REPO, 'tools', 'dist_train.sh'),
                          DIGITS_GAL, nproc], capture_output=True, text=True)
    assert res.returncode == 2
    assert f"NPROC must be a whole number >= 1 (processes on this node, " \
        f"one per GPU), got '{nproc}'" in res.stderr
