#!/usr/bin/env python
"""Break GAL on purpose and check that a fast test notices.

    python tools/mutation_check.py [--jobs 2] [--only NAME ...] [--out F.md]

Each mutant is one named breakage (an exact text replacement in one file)
applied to a temporary copy of the repository; the test files that should
catch it then run there (in full), and the whole fast suite (``-m "not
slow"``) if those do not. The table says which test failed first, per
mutant; the command fails (exit 1) when a mutant survives.
"""
import argparse
import os
import os.path as osp
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, Tuple

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))


class Mutant(NamedTuple):
    name: str
    what: str
    path: str
    old: str
    new: str
    tests: Tuple[str, ...]


MUTANTS = (
    Mutant('cls-targets', "the classification adapter's tentative loss "
           'uses the targets rolled by one',
           'mmgal/adapters/cls_head_adapter.py',
           'return module.forward(z_new, *args[1:], **kw)',
           'return module.forward(z_new, args[1].roll(1, 0), *args[2:], '
           '**kw)', ('tests/test_adapters/test_cls_head_adapter.py', )),
    Mutant('cls-reduction', "the closed form's coefficients drop the loss's "
           'reduction (1 / batch)', 'mmgal/adapters/cls_head_adapter.py',
           'coef = per * (scale / log_base)', 'coef = per / log_base',
           ('tests/test_adapters/test_cls_head_adapter.py', )),
    Mutant('detr-batched-targets', "the batched DETR step gives each layer "
           "another layer's targets", 'mmgal/adapters/detr_head_adapter.py',
           'targets = torch.stack([layer.targets for layer in layers])',
           'targets = torch.stack([layer.targets for layer in layers[::-1]])',
           ('tests/test_adapters/test_detr_head_adapter.py', )),
    Mutant('detr-layer-targets', "the DETR step with the head's own box "
           'loss modules reads the targets in reverse query order',
           'mmgal/adapters/detr_head_adapter.py',
           'l1(boxes, targets[k].to(boxes.dtype), w,',
           'l1(boxes, targets[k].flip(0).to(boxes.dtype), w,',
           ('tests/test_adapters/test_detr_head_adapter.py', )),
    Mutant('detr-iou-not-giou', "the batched DETR step's own box loss "
           "drops GIoU's enclosing-box term (an IoU loss)",
           'mmgal/adapters/detr_head_adapter.py',
           'gious = overlap / union - (enclose - union) / enclose',
           'gious = overlap / union',
           ('tests/test_adapters/test_detr_head_adapter.py', )),
    Mutant('compiled-adam-no-grad', "the compiled step's in-graph Adam "
           "update drops the adjuster's gradient",
           'mmgal/core/compiled_step.py',
           '[grads[k] * grad_scale if grad_scale != 1 else grads[k]',
           '[torch.zeros_like(grads[k])',
           ('tests/test_core/test_compiled_step.py', )),
    Mutant('no-adjuster-step', 'the adjuster learner never steps the '
           'adjuster', 'mmgal/core/adjuster_learner.py',
           'self.optimizer.step()', 'pass  # mutant',
           ('tests/test_engine/test_gal_optim_wrapper.py', )),
    Mutant('policy-always-g', 'the policy always picks the vanilla g',
           'mmgal/core/gal_step.py',
           'grad = torch.where(rows_adopt, g_adj, g_out)', 'grad = g_out',
           ('tests/test_core/test_gal_step.py', )),
    Mutant('ddp-sum', "the adjuster's gradient is summed over the ranks, "
           'not averaged', 'mmgal/core/adjuster_learner.py',
           'flat = flat[:-1] / flat[-1:].clamp_min(1.0)', 'flat = flat[:-1]',
           ('tests/test_engine/test_gal_optim_wrapper_ddp.py', )),
    Mutant('accumulation-sum', "the adjuster's gradient is summed over "
           'accumulated micro-batches, not averaged',
           'mmgal/core/adjuster_learner.py',
           'torch._foreach_mul_(grads, 1.0 / self._micro_steps)',
           'pass  # mutant', ('tests/test_engine/test_gal_optim_wrapper.py',
                              )),
    Mutant('remainder-sign', "the remainder's first-order term with the "
           'wrong sign', 'mmgal/core/gal_step.py',
           'rem = change + eta * first', 'rem = change - eta * first',
           ('tests/test_core/test_gal_step.py', )),
    Mutant('softmax-uncentred', "cross-entropy's closed form without "
           "centring the step by E_p", 'mmgal/core/remainders.py',
           'u = delta - (p * delta).sum(-1, keepdim=True)', 'u = delta',
           ('tests/test_core/test_remainders.py', )),
    Mutant('square-half', "the squared error's remainder halved",
           'mmgal/core/remainders.py',
           'return (coef * delta * delta).sum()',
           'return 0.5 * (coef * delta * delta).sum()',
           ('tests/test_core/test_remainders.py', )),
    Mutant('objective-unscaled', "the adjuster minimises |R| although "
           "objective='normalized'", 'mmgal/core/gal_step.py',
           "obj = rem.abs() / step2 if objective == 'normalized' else",
           "obj = rem.abs() if objective == 'normalized' else",
           ('tests/test_core/test_gal_step.py', )),
    Mutant('eta-first-group', "GAL's eta is the first param group's lr, "
           "not the head's", 'mmgal/engine/gal_optim_wrapper.py',
           "return float(self.optimizer.param_groups[self._lr_group]['lr'])",
           "return float(self.optimizer.param_groups[0]['lr'])",
           ('tests/test_engine/test_gal_optim_wrapper.py', )),
    Mutant('step-nonfinite-grad', "the one GAL step lets a non-finite "
           "step's gradient reach the adjuster",
           'mmgal/core/gal_step.py',
           'adj_grads = {k: torch.where(keep, v, v.new_zeros(()))',
           'adj_grads = {k: v', ('tests/test_core/test_gal_step.py', )),
    Mutant('step-probe-current', "the step's probe measures the current "
           'adjuster instead of the initial one', 'mmgal/core/gal_step.py',
           'a0 = _cast(grads.call(initial, initial_params, buffers, x),',
           'a0 = _cast(grads.call(adjuster, params, buffers, x),',
           ('tests/test_engine/test_gal_optim_wrapper.py', )),
    Mutant('step-stats-adopted', "the step's statistics count the "
           'non-finite groups as adopted', 'mmgal/core/gal_step.py',
           '        adopt.sum().float(),\n',
           '        (~finite).sum().float(),\n',
           ('tests/test_engine/test_gal_optim_wrapper.py', )),
    Mutant('in-graph-unaveraged', "the adjuster's in-graph update sums a "
           "grouped step's groups instead of averaging them",
           'mmgal/core/adjuster_learner.py',
           'grad_scale=1.0 / (z.shape[0] if grouped else 1))',
           'grad_scale=1.0)',
           ('tests/test_engine/test_gal_optim_wrapper.py', )),
    Mutant('settings-preset-ignored', "the release preset leaves the "
           "default's remainder", 'mmgal/core/settings.py',
           "    'release': dict(remainder='reference',",
           "    'release': dict(remainder='exact',",
           ('tests/test_core/test_settings.py', )),
)


def copy_repo(dest: str) -> None:
    ignore = shutil.ignore_patterns('.git', '.venv', 'data', 'work_dirs',
                                    '__pycache__', '.pytest_cache', '.gpu',
                                    '*.egg-info')
    shutil.copytree(REPO, dest, ignore=ignore, dirs_exist_ok=True)


def apply(root: str, m: Mutant) -> None:
    path = osp.join(root, m.path)
    with open(path) as f:
        text = f.read()
    if text.count(m.old) != 1:
        raise RuntimeError(f'{m.name}: the text to replace occurs '
                           f'{text.count(m.old)} times in {m.path} (the '
                           'mutant is stale: update it)')
    with open(path, 'w') as f:
        f.write(text.replace(m.old, m.new))


def run_tests(root: str, targets: list, fast: bool) -> Tuple[int, str]:
    env = dict(os.environ, PYTHONPATH=root + os.pathsep +
               os.environ.get('PYTHONPATH', ''))
    marks = ['-m', 'not slow'] if fast else []
    res = subprocess.run(
        [sys.executable, '-m', 'pytest', '-x', '-q', *marks,
         '-p', 'no:cacheprovider', *targets], cwd=root, env=env,
        capture_output=True, text=True)
    return res.returncode, res.stdout + res.stderr


def first_failure(output: str) -> str:
    found = re.search(r'^FAILED (\S+)', output, re.M) or re.search(
        r'^ERROR (\S+)', output, re.M)
    return found.group(1) if found else '?'


def check(m: Mutant) -> dict:
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f'mutant_{m.name}_') as root:
        copy_repo(root)
        apply(root, m)
        # Its own test files in full (the compiled step's are slow), then
        # the whole fast suite.
        for targets, fast in ((list(m.tests), False), (['tests'], True)):
            code, out = run_tests(root, targets, fast)
            if code not in (0, 5):
                return dict(name=m.name, what=m.what, caught=True,
                            by=first_failure(out),
                            seconds=time.perf_counter() - t0)
    return dict(name=m.name, what=m.what, caught=False, by='-',
                seconds=time.perf_counter() - t0)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument('--only', nargs='+', choices=[m.name for m in MUTANTS])
    p.add_argument('--jobs', type=int, default=2)
    p.add_argument('--out', help='also write the table to this file')
    args = p.parse_args(argv)
    mutants = [m for m in MUTANTS if not args.only or m.name in args.only]
    # Every mutant must apply to today's code before anything runs.
    for m in mutants:
        with open(osp.join(REPO, m.path)) as f:
            if f.read().count(m.old) != 1:
                raise SystemExit(f'{m.name}: its text is not found exactly '
                                 f'once in {m.path}: update the mutant')
    t0 = time.perf_counter()
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(check, mutants))
    lines = ['| mutant | breakage | caught by | seconds |',
             '|---|---|---|---|']
    lines += [f"| {r['name']} | {r['what'].replace('|', chr(92) + '|')} | "
              f"{r['by'] if r['caught'] else '**not caught**'} | "
              f"{r['seconds']:.0f} |" for r in rows]
    table = '\n'.join(lines)
    print(table)
    print(f'\n{sum(r["caught"] for r in rows)}/{len(rows)} caught, '
          f'{time.perf_counter() - t0:.0f} s')
    if args.out:
        with open(args.out, 'w') as f:
            f.write(table + '\n')
    if not all(r['caught'] for r in rows):
        raise SystemExit(1)
    return rows


if __name__ == '__main__':
    main()
