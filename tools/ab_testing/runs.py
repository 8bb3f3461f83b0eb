"""Training and reading an A/B test's runs: one run per arm and seed, each
in its own folder through ``tools/train.py`` (``tools/dist_train.sh`` for
several processes), a line per run and epoch while it trains."""
import glob
import json
import os
import os.path as osp
import re
import signal
import subprocess
import sys
import time
from collections import deque
from typing import List, Optional

REPO = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
# GAL's learning signals, read at the end of each run that has GAL on.
SIGNALS = ('gal/remainder_ratio', 'gal/cos_init', 'gal/adjuster_drift',
           'gal/adopt_rate')

# mmengine's LogProcessor lines: training (by epoch or by iteration) and
# the validation's summary (the line with no eta), its "key: value" pairs.
_EPOCH_TRAIN = re.compile(r'Epoch\(train\)\s*\[(\d+)\]\[\s*(\d+)/(\d+)\]')
_ITER_TRAIN = re.compile(r'Iter\(train\)\s*\[\s*(\d+)/(\d+)\]')
_VAL = re.compile(r'(?:Epoch|Iter)\(val\)\s*(?:\[(\d+)\])?\[\s*\d+/\d+\]')
_PAIR = re.compile(r'(\S+): (\S+)')


class MetricNotLogged(Exception):
    """The validation logged other keys than the metric (``keys``)."""

    def __init__(self, keys: List[str]):
        super().__init__(', '.join(keys))
        self.keys = keys


class Progress:
    """A line per run and epoch (arm, seed, epoch, the metric so far, the
    time left), read from the training's log lines. The time left is the
    training this call has done, per run's worth, times what it has left:
    runs that are only read take none.

    Args:
        metric (str): the val key shown.
        max_epochs (int, optional): epochs per run; None for a run by
            iteration (its lines are per validation, with the iteration).
        to_train (int): runs this call will train.
    """

    def __init__(self, metric: str, max_epochs: Optional[int],
                 to_train: int):
        self.metric, self.max_epochs = metric, max_epochs
        self.to_train = to_train
        self.trained, self.seconds = 0.0, 0.0  # runs' worth, and its time

    def start(self, arm: str, seed: int, index: int, total: int) -> None:
        self.label = f'{arm} seed {seed}'
        self.where = f'run {index}/{total}'
        self.t0 = time.perf_counter()
        self.first = self.fraction = None
        self.epoch = 0  # the last epoch with a line
        self.iter = None  # by iteration: 'i/max' of the last training line
        self.value = '-'

    def feed(self, line: str) -> Optional[str]:
        """The progress line that ``line`` completes, if any; raises
        MetricNotLogged at a validation without the metric."""
        m = _EPOCH_TRAIN.search(line)
        if m and self.max_epochs:
            epoch, i, n = map(int, m.groups())
            self._at((epoch - 1 + i / n) / self.max_epochs,
                     (epoch - 1) / self.max_epochs)
            if epoch - 1 > self.epoch:  # an epoch ended with no validation
                return self._line(epoch - 1)
            return None
        m = _ITER_TRAIN.search(line)
        if m:
            self.iter = f'{m.group(1)}/{m.group(2)}'
            self._at(int(m.group(1)) / int(m.group(2)),
                     int(m.group(1)) / int(m.group(2)))
            return None
        m = _VAL.search(line)
        if m is None or 'eta:' in line:
            return None
        pairs = dict(_PAIR.findall(line[m.end():]))
        if self.metric not in pairs:
            raise MetricNotLogged(
                [k for k in pairs if k not in ('data_time', 'time')])
        self.value = pairs[self.metric]
        if m.group(1) is None:  # by iteration: a line per validation
            return self._line(None)
        return self._line(int(m.group(1)))

    def finish(self) -> None:
        """The run ended: its training counts towards the rate."""
        if self.fraction is not None:
            self.trained += self.fraction - self.first
            self.seconds += time.perf_counter() - self.t0
        self.to_train -= 1

    def _at(self, fraction: float, start: float) -> None:
        if self.first is None:  # a resumed run starts where it stopped
            self.first = start
        self.fraction = fraction

    def _line(self, epoch: Optional[int]) -> str:
        if epoch is not None:
            self.epoch = epoch
        at = f' iter {self.iter}' if epoch is None else (
            f' epoch {epoch}/{self.max_epochs}' if self.max_epochs else
            f' epoch {epoch}')
        return (f'[ab_test] {self.label}{at}: {self.metric} {self.value} '
                f'({self.where}, {self._left()})')

    def _left(self) -> str:
        done = self.trained + (self.fraction or 0.) - (self.first or 0.)
        seconds = self.seconds + time.perf_counter() - self.t0
        if done <= 0:
            return 'time left not known yet'
        left = seconds / done * (self.to_train - (self.fraction or 0.))
        return (f'about {left:.0f} s left' if left < 90 else
                f'about {left / 60:.0f} min left')


def read_scalars(run_dir: str) -> list:
    """mmengine's scalars of a run, in the order written (a resumed run
    writes a new timestamped folder)."""
    rows = []
    for path in sorted(glob.glob(osp.join(run_dir, '*', 'vis_data',
                                          'scalars.json'))):
        with open(path) as f:
            rows += [json.loads(line) for line in f if line.strip()]
    return rows


def summarize_run(run_dir: str, metric: str, rule: str) -> dict:
    """The metric per validation (by epoch or step), its final and best
    value (by ``rule``), the training loss, and GAL's learning signals over
    training and at the end. A step logged twice (a resumed run's) counts
    as its last writing."""
    rows = read_scalars(run_dir)
    vals, losses, series = {}, {}, {key: {} for key in SIGNALS}
    for row in rows:
        if metric in row:
            vals[row.get('step')] = row[metric]
        if 'loss' in row and 'iter' in row:
            losses[row['iter']] = row['loss']
        for key in SIGNALS:
            if key in row and 'iter' in row:
                series[key][row['iter']] = row[key]
    if not vals:
        keys = sorted({k for r in rows for k in r
                       if '/' in k and not k.startswith('gal/')})
        raise SystemExit(f'ab_test: {run_dir} logged no {metric!r}; its '
                         f"val keys: {', '.join(keys) or 'none'}")
    steps = sorted(vals)
    best = max if rule == 'greater' else min
    return dict(metric=[vals[s] for s in steps], val_steps=steps,
                final=vals[steps[-1]], best=best(vals.values()),
                loss_iters=sorted(losses),
                loss=[losses[i] for i in sorted(losses)],
                signals={key: s[max(s)] for key, s in series.items() if s},
                signal_series={k: [[i, v[i]] for i in sorted(v)]
                               for k, v in series.items() if v})


def train_command(work_dir: str, arm: str, seed: int, run_dir: str,
                  gpus: int) -> list:
    """tools/train.py (dist_train.sh for gpus > 1) on the arm's config,
    seeded; ``--resume`` where the run has a checkpoint."""
    cfg = osp.join(work_dir, f'{arm}.py')
    opts = [f'randomness.seed={seed}', f'optim_wrapper.seed={seed}']
    common = ['--work-dir', run_dir]
    if glob.glob(osp.join(run_dir, '*.pth')):
        common.append('--resume')  # an interrupted run: its last checkpoint
    if gpus > 1:
        return ['bash', osp.join(REPO, 'tools', 'dist_train.sh'), cfg,
                str(gpus)] + common + ['--cfg-options'] + opts
    return [sys.executable, osp.join(REPO, 'tools', 'train.py'), cfg] + \
        common + ['--cfg-options'] + opts


def run_dir(work_dir: str, arm: str, seed: int) -> str:
    return osp.join(work_dir, f'{arm}_seed{seed}')


def is_done(work_dir: str, arm: str, seed: int) -> bool:
    return osp.exists(osp.join(run_dir(work_dir, arm, seed), 'done.json'))


def run_one(work_dir: str, arm: str, seed: int, gpus: int, metric: str,
            rule: str, progress: Progress) -> dict:
    """Train one run (or resume it) unless it has finished, then read it.
    Its output goes to ``<run>/ab_test_train.log``; a failure stops the
    test with the log's last lines."""
    folder = run_dir(work_dir, arm, seed)
    done = osp.join(folder, 'done.json')
    if not osp.exists(done):
        os.makedirs(folder, exist_ok=True)
        t0 = time.perf_counter()
        rc, tail = _train(train_command(work_dir, arm, seed, folder, gpus),
                          osp.join(folder, 'ab_test_train.log'), progress,
                          metric)
        if rc != 0:
            raise SystemExit(
                f'ab_test: the {arm} run of seed {seed} failed (exit {rc}); '
                f"the end of its log ({folder}/ab_test_train.log):\n"
                + ''.join(tail) + 'Run the same command again to resume it.')
        with open(done, 'w') as f:
            json.dump(dict(seconds=round(time.perf_counter() - t0, 1)), f)
    with open(done) as f:
        seconds = json.load(f).get('seconds')  # its training time, if known
    return dict(summarize_run(folder, metric, rule), seconds=seconds)


def _train(cmd: list, log_path: str, progress: Progress, metric: str):
    """Run ``cmd``, its output to ``log_path``, progress lines to stdout;
    (exit code, last lines). The training process does not outlive this
    one."""
    tail = deque(maxlen=30)
    with open(log_path, 'a') as log:
        # dist_train.sh runs $PYTHON: this interpreter unless one is set.
        env = dict(os.environ, PYTHON=os.environ.get('PYTHON',
                                                     sys.executable))
        # A process group of its own: all its processes (dist_train.sh's
        # ranks too) are stopped with it.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=env)
        try:
            for line in proc.stdout:
                log.write(line)
                tail.append(line)
                shown = progress.feed(line)
                if shown:
                    print(shown, flush=True)
            rc = proc.wait()
        except MetricNotLogged as err:
            raise SystemExit(
                f'ab_test: the val evaluator does not log {metric!r}; it '
                f"logs: {', '.join(err.keys)}. Give one of those with "
                '--metric.') from None
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    progress.finish()
    return rc, list(tail)
