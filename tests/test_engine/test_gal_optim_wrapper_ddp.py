"""Two gloo processes: the adjuster's gradient is averaged over the GAL
steps of every rank (one collective) and both ranks step it alike."""
import os
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F


def _worker(rank, world, init_file, out_dir):
    import mmgal  # noqa: F401
    from mmgal.engine import GALOptimWrapper
    dist.init_process_group('gloo', init_method=f'file://{init_file}',
                            rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.Linear(6, 4)
    wrapper = GALOptimWrapper(torch.optim.SGD(model.parameters(), lr=0.1),
                              sigma=0.3, arch=(8, ),
                              adjuster_optimizer=dict(type='SGD', lr=1.0))
    wrapper.setup_adjuster(4)
    before = [p.detach().clone() for p in wrapper.adjuster.parameters()]
    gen = torch.Generator().manual_seed(10 + rank)  # each rank its data
    grads = []
    for _ in range(rank + 1):  # rank 0: 1 GAL step, rank 1: 2 (one call)
        x = torch.randn(5, 6, generator=gen)
        y = torch.randint(0, 4, (5, ), generator=gen)
        loss = wrapper.gal_forward(model(x), lambda t: F.cross_entropy(t, y))
        grads.append(loss)
    # One backward and one model/adjuster step per rank.
    wrapper.backward(sum(grads))
    local = [p.grad.detach().clone() for p in wrapper.adjuster.parameters()]
    steps = wrapper.learner._micro_steps
    wrapper.step()
    after = [p.detach().clone() for p in wrapper.adjuster.parameters()]
    torch.save(dict(before=before, local=local, after=after, steps=steps),
               os.path.join(out_dir, f'rank{rank}.pth'))
    dist.destroy_process_group()


def test_ddp_averages_the_adjuster_gradient_over_all_ranks_steps():
    with tempfile.TemporaryDirectory() as tmp:
        init = os.path.join(tmp, 'init')
        mp.spawn(_worker, args=(2, init, tmp), nprocs=2, join=True)
        r0, r1 = (torch.load(os.path.join(tmp, f'rank{r}.pth'))
                  for r in (0, 1))
    assert (r0['steps'], r1['steps']) == (1, 2)
    for b, l0, l1, a0, a1 in zip(r0['before'], r0['local'], r1['local'],
                                 r0['after'], r1['after']):
        # The mean over the 3 GAL steps of both ranks (SGD, lr 1).
        expected = b - (l0 + l1) / 3
        assert (l0 + l1).abs().max() > 1e-4
        torch.testing.assert_close(a0, expected, rtol=1e-5, atol=1e-7)
        assert torch.equal(a0, a1)
