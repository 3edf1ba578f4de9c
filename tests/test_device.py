"""device.py: the device a config names, or a one-line error when it is not here."""

import pytest
import torch

from mnist_pipeline.device import select_device
from mnist_pipeline.errors import UserError


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert select_device("auto").type == expected


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("spec", ["cuda", "cuda:1"])
def test_absent_cuda_is_an_error_not_a_fallback(spec):
    with pytest.raises(UserError, match=f"device '{spec}': CUDA is not available here"):
        select_device(spec)


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_absent_mps_is_an_error():
    with pytest.raises(UserError, match="MPS is not available"):
        select_device("mps")
