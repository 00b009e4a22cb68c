"""Parameter-efficiency ideas other than LORS, as decoder options.

Plain PyTorch, like :mod:`lors_det.lors`:

* :class:`TiedFFN`: one matrix used in both directions,
  ``FFN(x) = W^T F(W x + b1) + b2`` (Koyun & Toreyin, "Do deep neural
  networks utilize the weight space efficiently?");
* :class:`LoRITaLinear`: a linear trained as a product of N linear maps, then
  multiplied out and SVD-truncated (LoRITa, arXiv 2405.03089), with
  :mod:`.lorita_compress` choosing the ranks of a trained model.
"""
from .lorita import LoRITaLinear, rank_for_energy, svd_truncate
from .tied import TiedFFN

__all__ = ['LoRITaLinear', 'TiedFFN', 'rank_for_energy', 'svd_truncate']
