import torch

from lors_det.lors import autocast_dtype


def test_autocast_dtype_answers_for_the_device_asked():
    assert autocast_dtype('cpu') is None and autocast_dtype('cuda') is None
    with torch.autocast('cpu', dtype=torch.bfloat16):
        assert autocast_dtype('cpu') == torch.bfloat16
        assert autocast_dtype('cuda') is None
    torch.set_autocast_enabled(True)  # CUDA's flag; settable without a GPU
    try:
        assert autocast_dtype('cuda') == torch.get_autocast_gpu_dtype()
        assert autocast_dtype('cpu') is None
    finally:
        torch.set_autocast_enabled(False)
    assert autocast_dtype('meta') is None
