import os.path as osp

import pytest
from mmengine.config import Config

import mmgal  # noqa: F401

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
import train as train_tool  # noqa: E402
from train import enable_amp  # noqa: E402

GAL_CFG = osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                   'resnet18_gal_1xb32_digits.py')
BASE_CFG = osp.join(REPO, 'configs', 'mmpretrain', 'digits',
                    'resnet18_1xb32_digits.py')


def merged(cfg_path, *argv):
    args = train_tool.parse_args([cfg_path, *argv])
    return train_tool.merge_args(Config.fromfile(cfg_path), args)


def test_amp_flag_keeps_gal_and_switches_on_its_loss_scaling():
    cfg = merged(GAL_CFG, '--amp')
    assert cfg.optim_wrapper.type == 'GALOptimWrapper'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    assert cfg.optim_wrapper.sigma == 0.01


def test_amp_flag_on_a_plain_config_is_the_stock_behaviour():
    cfg = merged(BASE_CFG, '--amp')
    assert cfg.optim_wrapper.type == 'AmpOptimWrapper'


def test_enable_amp_keeps_an_explicit_loss_scale():
    cfg = Config(dict(optim_wrapper=dict(type='GALOptimWrapper',
                                         loss_scale=512.)))
    assert enable_amp(cfg).optim_wrapper.loss_scale == 512.


def test_resume_work_dir_and_cfg_options():
    cfg = merged(GAL_CFG, '--resume', '--work-dir', '/tmp/x',
                 '--cfg-options', 'optim_wrapper.sigma=0.5')
    assert cfg.resume is True and cfg.load_from is None
    assert cfg.work_dir == '/tmp/x'
    assert cfg.optim_wrapper.sigma == 0.5
    cfg = merged(GAL_CFG, '--resume', 'a.pth')
    assert cfg.load_from == 'a.pth'
    assert cfg.train_dataloader.persistent_workers is False


def test_switching_off_gals_default_hook_by_none_is_named(capsys):
    """mmengine removes only its own default hooks for None (for another:
    a bare AssertionError): the tool names the setting and the way to
    train without GAL, before anything is built."""
    with pytest.raises(SystemExit, match=r"default_hooks\.gal=None: "
                       r"mmengine switches off only its own default hooks "
                       r"\(runtime_info, .*checkpoint\) by None\. To train "
                       r"without GAL, set optim_wrapper\.enabled=False"):
        train_tool.main([GAL_CFG, '--no-data-check', '--cfg-options',
                         'default_hooks.gal=None'])
    # mmengine's own default hooks may still be removed so.
    args = train_tool.parse_args([GAL_CFG, '--no-data-check'])
    cfg = merged(GAL_CFG, '--no-data-check', '--cfg-options',
                 'default_hooks.timer=None')
    train_tool.check_inputs(cfg, args)


def test_train_tool_runs_a_gal_config(digits_root, tmp_path):
    runner = train_tool.main([
        GAL_CFG, '--work-dir',
        str(tmp_path), '--cfg-options', f'train_dataloader.dataset.data_root='
        f'{digits_root}', f'val_dataloader.dataset.data_root={digits_root}',
        'train_dataloader.dataset.indices=64',
        'val_dataloader.dataset.indices=64', 'train_cfg.max_epochs=1',
        'model.backbone.base_channels=8', 'model.head.in_channels=64'
    ])
    assert osp.isfile(osp.join(str(tmp_path), 'epoch_1.pth'))
    assert runner.optim_wrapper.adjuster is not None


@pytest.mark.parametrize('script', ['dist_train.sh', 'quickstart.sh',
                                    'run_tests.sh', 'setup_env.sh'])
def test_shell_tools_are_valid_bash(script):
    import subprocess
    subprocess.run(['bash', '-n', osp.join(REPO, 'tools', script)],
                   check=True)
