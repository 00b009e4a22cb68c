"""LORS on an unmodified mmdet detector: a wrapper that shares its stacks.

Why a wrapper (and not a hook or a subclass per detector):

* the structure must be fixed when the model is *built*, because every
  entry point builds a model and then loads a checkpoint (``tools/test.py``,
  ``init_detector``, ``DetInferencer``, ``load_from``, resume); a runner
  hook would change the model only where hooks run, and a checkpoint of the
  shared model would not load anywhere else;
* mmdet's ``init_weights`` (DINO's Xavier loop, the grid init of
  ``MultiScaleDeformableAttention``, ``DIIHead``'s Xavier loop) writes the
  weights of the very linears LORS replaces. The wrapper owns
  ``init_weights``: it puts dense linears back
  (:meth:`SharedLayers.unshare`), runs the detector's own init on the plain
  architecture, and shares again from the result
  (:meth:`SharedLayers.reshare`, in place, so an optimizer built before
  init keeps its parameters). A hook or a build-time function could not
  order itself around a detector's init;
* it works for any detector type with one class, and the detector stays
  the mmdet object (``model.detector``), untouched except that the shared
  linears are parameter-free views.

Checkpoint layout: ``detector.*`` is the detector's state dict without the
replaced linears; ``lors.<stack>.lorst|lorsa.<linear>.*`` holds the shared
stacks (``<stack>``/``<linear>`` are module paths with '.' -> '-').
"""
import copy
from typing import Optional, Sequence

from mmdet.registry import MODELS
from mmengine.logging import print_log
from mmengine.model import BaseModel
from torch import nn

from ..lors import SharedLayers, count_parameters
from ..lors.checks import check_keys, config_block
from . import deploy

SHARE_KEYS = ('stack', 'lorst', 'lorsa', 'init_from')


@MODELS.register_module()
class LORSWrapper(BaseModel):
    """A detector whose stacked layers share weights with LORS.

    Args:
        detector (dict): the mmdet detector's config (``{{_base_.model}}``).
        share (list[dict]): one entry per stack, each with ``stack`` (the
            path of an ``nn.ModuleList`` inside the detector, e.g.
            ``'roi_head.bbox_head'`` or ``'decoder.layers'``), and
            :class:`~lors_det.lors.share.SharedLayers`'s ``lorst``,
            ``lorsa`` and ``init_from``.
        init_cfg (dict, optional): must stay None; the detector's own
            ``init_cfg`` applies.

    Training, validation and testing go through the detector (``forward``
    delegates); the data preprocessor is the detector's.
    """

    def __init__(self,
                 detector: dict,
                 share: Sequence[dict],
                 init_cfg: Optional[dict] = None):
        if init_cfg is not None:
            raise ValueError('LORSWrapper.init_cfg must be None; set the '
                             "detector's init_cfg instead")
        # a copy: mmdet's DETR family writes into its bbox_head config
        built = MODELS.build(copy.deepcopy(detector))
        super().__init__(data_preprocessor=built.data_preprocessor)
        self.detector = built
        if not isinstance(share, (list, tuple)) or not share:
            raise ValueError('model.share must be a non-empty list of dicts '
                             f'(stack, lorst, lorsa), got {share!r}')
        self.lors = nn.ModuleDict()
        for i, spec in enumerate(share):
            with config_block(f'model.share[{i}]'):
                spec = dict(check_keys('entry', spec, SHARE_KEYS))
                path = spec.pop('stack', None)
                layers = self._stack(path)
                key = path.replace('.', '-')
                if key in self.lors:
                    raise ValueError(f'stack {path!r} is given twice')
                self.lors[key] = SharedLayers(layers, **spec)
        self._log_parameter_counts()

    def _stack(self, path) -> nn.ModuleList:
        if not isinstance(path, str) or not path:
            raise ValueError('stack must be the path of an nn.ModuleList in '
                             f'the detector, got {path!r}')
        try:
            layers = self.detector.get_submodule(path)
        except AttributeError:
            layers = None
        if not isinstance(layers, nn.ModuleList):
            raise ValueError(f'stack={path!r} is not an nn.ModuleList of '
                             f'{type(self.detector).__name__} (got '
                             f'{type(layers).__name__})')
        return layers

    def _log_parameter_counts(self) -> None:
        for key, shared in self.lors.items():
            counts = count_parameters(shared)
            print_log(
                f'LORSWrapper: {key.replace("-", ".")} shares '
                f'{len(shared.targets)} linears of {shared.num_layers} '
                f'layers: {shared.dense_numel:,} parameters unshared -> '
                f'{counts["total"]:,} (shared {counts["shared"]:,}, private '
                f'{counts["private"]:,})',
                logger='current')

    def init_weights(self) -> None:
        """The detector's own init on its plain architecture, then the
        stacks are initialised from it (see the module docstring)."""
        for shared in self.lors.values():
            shared.unshare()
        self.detector.init_weights()
        for shared in self.lors.values():
            shared.reshare()

    def forward(self, inputs, data_samples=None, mode: str = 'tensor'):
        """The detector's ``forward`` (modes 'loss', 'predict', 'tensor')."""
        if mode == 'loss':
            deploy.check_not_merged(self)
        return self.detector(inputs, data_samples, mode)

    # merging LORS: lors_det.models.deploy is the one place (also for the
    # deploy checkpoint of the unwrapped detector, ``to_deploy``)
    has_lors = True  # ``share`` is never empty

    @property
    def lors_merged(self) -> bool:
        return deploy.is_merged(self)

    def merge_lors(self) -> int:
        """Fold every shared stack into dense per-layer weights, for
        inference (same outputs); call it after loading the weights.
        Returns the number of stacks merged."""
        return deploy.merge_lors(self)

    def unmerge_lors(self) -> None:
        deploy.unmerge_lors(self)
