"""Faults a trainer must survive, through tools/train.py: code in a
checkpoint, a run that diverges, bad checkpoint files and image folders,
a full disk, a stalled DDP rank."""
import errno
import os
import os.path as osp
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
from mm_helpers import DIGITS_GAL

import mmgal  # noqa: F401
from mmgal.engine import NonFiniteTrainingError
from mmgal.utils import AtomicLocalBackend, strip_executable_meta

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
import train as train_tool  # noqa: E402


def options(root, n=64, epochs=1, **extra):
    opts = [f'{k}.dataset.data_root={root}' for k in (
        'train_dataloader', 'val_dataloader', 'test_dataloader')] + [
        f'train_dataloader.dataset.indices={n}',
        'val_dataloader.dataset.indices=32', f'train_cfg.max_epochs={epochs}',
        'model.backbone.base_channels=8', 'model.head.in_channels=64',
        'default_hooks.logger.interval=1']
    return opts + [f'{k}={v}' for k, v in extra.items()]


def run(args):
    return train_tool.main([DIGITS_GAL] + args)


@pytest.mark.slow
def test_a_checkpoint_cannot_run_code_on_resume(digits_root, tmp_path,
                                                capsys):
    """mmengine's Runner.resume executes meta['config'] as Python; through
    tools/train.py nothing runs and the user is told what was ignored."""
    work = tmp_path / 'work'
    run(['--work-dir', str(work), '--cfg-options'] + options(digits_root))
    ckpt = torch.load(str(work / 'epoch_1.pth'))
    marker = tmp_path / 'PWNED'
    ckpt['meta']['config'] = f'open({str(marker)!r}, "w").write("ran")\n'
    crafted = tmp_path / 'crafted.pth'
    torch.save(ckpt, str(crafted))
    # Without the guard, mmengine runs it (the vulnerability is real).
    from mmengine.config import Config
    Config.fromstring(ckpt['meta']['config'], file_format='.py')
    assert marker.exists()
    marker.unlink()
    runner = run(['--work-dir', str(tmp_path / 'resumed'), '--resume',
                  str(crafted), '--cfg-options'] +
                 options(digits_root, epochs=2))
    assert not marker.exists()
    assert runner.epoch == 2
    log = open(next((tmp_path / 'resumed').glob('*/*.log'))).read()
    assert "ignored the checkpoint's meta['config']" in log


@pytest.mark.slow
def test_a_resumed_run_trusts_no_path_or_config_in_runtime_info(
        digits_root, tmp_path):
    """A crafted runtime_info cannot make mmengine's CheckpointHook delete
    a folder outside the run (best_ckpt) or the user's epoch_*.pth files
    (keep_ckpt_ids), and its cfg (Python text) is not carried into the
    resumed run's own checkpoints."""
    work = tmp_path / 'work'
    run(['--work-dir', str(work), '--cfg-options'] + options(digits_root))
    ckpt = torch.load(str(work / 'epoch_1.pth'))
    outside = tmp_path / 'precious'
    outside.mkdir()
    (outside / 'data.txt').write_text('keep me')
    info = ckpt['message_hub']['runtime_info']
    info.update(best_ckpt=str(outside), best_score=-1.0,
                keep_ckpt_ids=list(range(1, 8)),
                last_ckpt='/etc/passwd',
                cfg='import os\nos.system("echo pwned")\n')
    ckpt['meta']['seed'] = 2**70  # numpy's error on resume, before
    crafted = tmp_path / 'crafted.pth'
    torch.save(ckpt, str(crafted))
    resumed = tmp_path / 'resumed'
    resumed.mkdir()
    for i in range(3, 8):  # the user's own files, of this run's naming
        (resumed / f'epoch_{i}.pth').write_text('user data')
    run(['--work-dir', str(resumed), '--resume', str(crafted),
         '--cfg-options'] + options(
             digits_root, epochs=2,
             **{'default_hooks.checkpoint.save_best': 'auto',
                'default_hooks.checkpoint.max_keep_ckpts': 1}))
    assert (outside / 'data.txt').read_text() == 'keep me'
    for i in range(3, 8):
        assert (resumed / f'epoch_{i}.pth').read_text() == 'user data'
    new = torch.load(str(resumed / 'epoch_2.pth'), weights_only=False)
    for text in (new['message_hub']['runtime_info']['cfg'],
                 new['meta']['cfg']):
        assert 'pwned' not in text and 'GALOptimWrapper' in text
    log = open(next(resumed.glob('*/*.log'))).read()
    assert "ignored the checkpoint's runtime_info['best_ckpt']" in log
    assert "ignored the checkpoint's runtime_info['last_ckpt']" in log
    assert "runtime_info['keep_ckpt_ids'] ([1, 2, 3, 4, 5, 6, 7])" in log
    assert "runtime_info['cfg'] is replaced" in log
    assert "ignored the checkpoint's meta['seed'] (1180591620717411303424)" \
        in log


def test_gal_hook_and_the_guard_strip_the_executable_meta():
    from mmgal.engine import GALHook, TrainingGuardHook
    for hook in (GALHook(), TrainingGuardHook()):
        ckpt = dict(meta=dict(config='import os', epoch=1, cfg='x = 1'))
        hook.after_load_checkpoint(None, ckpt)
        assert ckpt['meta'] == dict(epoch=1, cfg='x = 1')
    assert strip_executable_meta(dict(meta=dict(epoch=1))) == []


def diverging(root, tmp_path, stop=True, epochs=4, keep=2):
    """Epochs of 2 iterations, max_keep_ckpts=keep; the lr jumps x1e7 at
    epoch 3, so the weights are not finite from epoch 3 or 4 on."""
    cfg = tmp_path / 'diverge.py'
    cfg.write_text(
        f'_base_ = {DIGITS_GAL!r}\n'
        "param_scheduler = dict(type='MultiStepLR', by_epoch=True, "
        'milestones=[2], gamma=1e7)\n'
        'default_hooks = dict(checkpoint=dict(interval=1, '
        f'max_keep_ckpts={keep}))\n' +
        ('' if stop else
         "custom_hooks = [dict(type='TrainingGuardHook', stop=False)]\n"))
    work = tmp_path / 'work'
    args = [str(cfg), '--work-dir', str(work),
            '--cfg-options'] + options(root, n=64, epochs=epochs)
    return args, work


def finite(path):
    state = torch.load(str(path))['state_dict']
    return all(bool(torch.isfinite(v).all()) for v in state.values()
               if v.is_floating_point())


@pytest.mark.slow
def test_a_diverging_run_stops_naming_the_iteration_and_keeps_its_checkpoint(
        digits_root, tmp_path):
    import re
    args, work = diverging(digits_root, tmp_path)
    with pytest.raises(NonFiniteTrainingError) as err:
        train_tool.main(args)
    msg = str(err.value)
    found = re.search(r'(the loss is nan at iteration \d+ \(epoch [34]\)|'
                      r'not finite at epoch [34]).*the last checkpoint with '
                      r'finite weights is epoch (\d)', msg)
    assert found, msg
    last = work / f'epoch_{found.group(2)}.pth'
    kept = sorted(p.name for p in work.glob('epoch_*.pth'))
    assert last.name in kept and finite(last)
    assert all(finite(work / name) for name in kept)
    assert len(kept) <= 2


@pytest.mark.slow
def test_with_stop_off_the_last_finite_checkpoint_survives_the_rotation(
        digits_root, tmp_path):
    args, work = diverging(digits_root, tmp_path, stop=False, epochs=6)
    train_tool.main(args)
    kept = sorted(p.name for p in work.glob('epoch_*.pth'))
    # Rotation keeps the last 2 (not finite) and, besides them, the last
    # finite one (epoch 2 or 3), which it would have deleted at epoch 5.
    assert kept[-2:] == ['epoch_5.pth', 'epoch_6.pth']
    assert not finite(work / 'epoch_6.pth')
    assert len(kept) == 3 and kept[0] in ('epoch_2.pth', 'epoch_3.pth')
    assert finite(work / kept[0])
    log = open(next(work.glob('*/*.log'))).read()
    assert log.count('TrainingGuardHook: the training loss is nan') == 1
    assert 'GAL step(s) up to iteration' in log  # GAL's non-finite count


@pytest.mark.slow
@pytest.mark.parametrize('stop', [True, False])
def test_with_one_kept_checkpoint_a_finite_one_survives_the_divergence(
        digits_root, tmp_path, stop):
    """max_keep_ckpts=1: mmengine deletes the kept checkpoint before it
    writes the next; the guard checks the weights first, so a finite
    checkpoint is on disk after the divergence, and the messages name a
    file that exists."""
    import re
    args, work = diverging(digits_root, tmp_path, stop=stop, epochs=5,
                           keep=1)
    if stop:
        with pytest.raises(NonFiniteTrainingError) as err:
            train_tool.main(args)
        msg = str(err.value)
    else:
        train_tool.main(args)
        msg = open(next(work.glob('*/*.log'))).read()
    found = re.findall(r'the last (?:checkpoint with finite weights is |'
                       r'finite one \()epoch (\d)', msg)
    assert found, msg
    for epoch in found:
        assert finite(work / f'epoch_{epoch}.pth')
    kept = sorted(p.name for p in work.glob('epoch_*.pth'))
    assert any(finite(work / name) for name in kept), kept


@pytest.mark.parametrize('field', ['--resume', 'load_from'])
@pytest.mark.parametrize('content', [b'', b'PK\x03\x04truncated'])
def test_an_empty_or_truncated_checkpoint_is_named_before_training(
        digits_root, tmp_path, field, content):
    bad = tmp_path / 'epoch_1.pth'
    bad.write_bytes(content)
    args = ['--work-dir', str(tmp_path / 'w')]
    args += ['--resume', str(bad)] if field == '--resume' else []
    args += ['--cfg-options'] + options(digits_root)
    if field == 'load_from':
        args.append(f'load_from={bad}')
    with pytest.raises(SystemExit, match=(
            r'is empty \(0 bytes\)' if not content else
            'is not a complete torch checkpoint') + '.*'):
        run(args)


@pytest.mark.parametrize('fault', ['empty_class', 'zero_byte_png'])
def test_image_folder_faults_are_named_before_training(digits_root, tmp_path,
                                                       fault):
    root = tmp_path / 'digits'
    shutil.copytree(digits_root, root)
    if fault == 'empty_class':
        (root / 'train' / '9a').mkdir()
        match = r"class folder\(s\) hold no image: .*train/9a.*11 classes"
    else:
        (root / 'train' / '3' / 'broken.png').write_bytes(b'')
        match = r'empty \(0-byte\) image file\(s\): .*train/3/broken\.png'
    with pytest.raises(SystemExit, match=match):
        run(['--work-dir', str(tmp_path / 'w'), '--cfg-options'] +
            options(str(root)))


def test_a_class_count_other_than_the_heads_is_named(digits_root, tmp_path):
    """One class folder and a 10-class head (before: 100 % accuracy, no
    word); 3 folders for a 2-class head is an error before training."""
    root = tmp_path / 'digits'
    shutil.copytree(digits_root, root)
    for d in (root / 'train').iterdir():
        if d.name != '0':
            shutil.rmtree(d)
    opts = options(str(root)) + ['train_cfg.max_epochs=1']
    with pytest.warns(UserWarning, match=r'has 1 class folder\(s\) while '
                      r'model\.head\.num_classes is 10.*accuracy is 100 % '
                      r'and meaningless'):
        run(['--work-dir', str(tmp_path / 'w'), '--cfg-options'] + opts)
    # More folders than the head has outputs: refused before training.
    for name in ('1', '2'):
        (root / 'train' / name).mkdir()
        shutil.copy(next((root / 'train' / '0').iterdir()),
                    root / 'train' / name)
    with pytest.raises(SystemExit, match=r'has 3 class folders but '
                       r'model\.head\.num_classes is 2: the labels from 2 '
                       r'on have no output; set num_classes=3'):
        run(['--work-dir', str(tmp_path / 'w2'), '--cfg-options'] + opts +
            ['model.head.num_classes=2'])


def test_a_compile_cache_that_is_a_file_is_named(digits_root, tmp_path):
    """TORCHINDUCTOR_CACHE_DIR naming a file: torch cannot even be imported
    (torchvision imports its compiler, which makes that folder); before, a
    bare FileExistsError from inside an import."""
    cache = tmp_path / 'not_a_folder'
    cache.write_text('x')
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(cache))
    res = subprocess.run(
        [sys.executable, osp.join(REPO, 'tools', 'train.py'), DIGITS_GAL,
         '--work-dir', str(tmp_path / 'w')], env=env, capture_output=True,
        text=True, timeout=600)
    assert res.returncode == 1
    assert f"TORCHINDUCTOR_CACHE_DIR='{cache}' is a file, not a folder" in \
        res.stderr
    assert 'Traceback' not in res.stderr


def test_a_full_disk_leaves_the_previous_checkpoint_whole(tmp_path,
                                                          monkeypatch):
    target = tmp_path / 'epoch_1.pth'
    target.write_bytes(b'previous')
    backend = AtomicLocalBackend()

    real_fdopen = os.fdopen

    def full_disk(fd, *a, **k):
        f = real_fdopen(fd, *a, **k)

        def write(data):
            raise OSError(errno.ENOSPC, 'No space left on device')

        f.write = write
        return f

    monkeypatch.setattr(os, 'fdopen', full_disk)
    with pytest.raises(OSError, match='No space left'):
        backend.put(b'new checkpoint', str(target))
    monkeypatch.undo()
    assert target.read_bytes() == b'previous'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['epoch_1.pth']
    backend.put(b'new checkpoint', str(target))
    assert target.read_bytes() == b'new checkpoint'
    assert oct(target.stat().st_mode & 0o777) != oct(0o600)


def test_train_py_adds_the_guard_atomic_checkpoints_and_a_dist_timeout():
    from mmengine.config import Config
    args = train_tool.parse_args([DIGITS_GAL, '--launcher', 'pytorch'])
    cfg = train_tool.add_safeguards(
        train_tool.merge_args(Config.fromfile(DIGITS_GAL), args))
    assert dict(type='TrainingGuardHook') in cfg.custom_hooks
    assert cfg.default_hooks.checkpoint.backend_args == dict(
        backend='mmgal_atomic_local')
    assert cfg.env_cfg.dist_cfg.timeout == train_tool.DEFAULT_DIST_TIMEOUT
    # A config's own settings win.
    cfg = Config(dict(custom_hooks=[dict(type='TrainingGuardHook',
                                         stop=False)],
                      default_hooks=dict(checkpoint=dict(
                          type='CheckpointHook',
                          backend_args=dict(backend='petrel'))),
                      env_cfg=dict(dist_cfg=dict(timeout=30)),
                      launcher='pytorch'))
    cfg = train_tool.add_safeguards(cfg)
    assert cfg.custom_hooks == [dict(type='TrainingGuardHook', stop=False)]
    assert cfg.default_hooks.checkpoint.backend_args == dict(
        backend='petrel')
    assert cfg.env_cfg.dist_cfg.timeout == 30


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def rank_pids(parent: int) -> dict:
    """{rank: pid} of the workers started under ``parent`` (torchrun)."""
    found = {}
    for pid in os.listdir('/proc'):
        if not pid.isdigit():
            continue
        try:
            with open(f'/proc/{pid}/environ', 'rb') as f:
                env = dict(kv.split(b'=', 1) for kv in f.read().split(b'\0')
                           if b'=' in kv)
            with open(f'/proc/{pid}/cmdline', 'rb') as f:
                cmd = f.read()
        except OSError:
            continue
        if b'train.py' in cmd and b'RANK' in env and \
                env.get(b'MMGAL_TEST_RUN') == str(parent).encode():
            found[int(env[b'RANK'])] = int(pid)
    return found


@pytest.mark.slow
def test_a_stalled_rank_stops_the_run_after_the_timeout(digits_root,
                                                        tmp_path):
    """SIGSTOP one rank of dist_train.sh: the other fails its collective
    after env_cfg.dist_cfg.timeout and the run ends non-zero."""
    tag = str(os.getpid())
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
               CUDA_VISIBLE_DEVICES='', MMGAL_TEST_RUN=tag)
    proc = subprocess.Popen(
        ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), DIGITS_GAL, '2',
         '--work-dir', str(tmp_path / 'w'), '--cfg-options'] +
        options(digits_root, n=1024, epochs=50,
                **{'env_cfg.dist_cfg.timeout': 20}),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        cwd=str(tmp_path))
    stopped = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and stopped is None:
            time.sleep(2)
            pids = rank_pids(int(tag))
            log = list((tmp_path / 'w').glob('*/*.log'))
            if len(pids) == 2 and log and 'Epoch(train)' in log[0].read_text():
                stopped = pids[1]
                os.kill(stopped, signal.SIGSTOP)
        assert stopped is not None, 'training did not start'
        t0 = time.time()
        out, _ = proc.communicate(timeout=240)
        waited = time.time() - t0
    finally:
        for pid in rank_pids(int(tag)).values():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0
    assert waited < 200, waited
    text = out.decode(errors='replace')
    assert 'timed out' in text.lower() or 'timeout' in text.lower(), \
        text[-3000:]
