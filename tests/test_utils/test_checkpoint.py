import io
import pickle

import numpy as np
import pytest
import torch
from mmengine.logging import HistoryBuffer

import mmgal  # noqa: F401  (allow-lists mmengine's checkpoint objects)


def roundtrip(obj):
    buf = io.BytesIO()
    torch.save(obj, buf)
    buf.seek(0)
    return torch.load(buf)  # weights_only=True: torch's default


def test_history_buffers_and_numpy_load_with_weights_only():
    hb = HistoryBuffer()
    for v in (1.0, 3.0):
        hb.update(v)
    state = dict(
        message_hub=dict(log_scalars={'train/loss': hb}),
        meta=dict(eta=np.float64(1.5), arr=np.arange(3, dtype=np.int64)))
    out = roundtrip(state)
    loaded = out['message_hub']['log_scalars']['train/loss']
    assert loaded.mean() == 2.0 and loaded.statistics('max') == 3.0
    assert out['meta']['eta'] == 1.5
    assert out['meta']['arr'].tolist() == [0, 1, 2]


class Evil:

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


class Evil2:

    def __reduce__(self):
        import os
        return (os.system, ('echo pwned', ))


def test_untrusted_checkpoints_still_cannot_run_code():
    with pytest.raises(pickle.UnpicklingError,
                       match=r"getattr\(<class 'mmengine.logging."
                       r"history_buffer.HistoryBuffer'>, '__init__'\)"):
        roundtrip({'x': Evil()})
    with pytest.raises(pickle.UnpicklingError):
        roundtrip({'x': Evil2()})
