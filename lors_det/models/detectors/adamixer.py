"""The query-based detector: backbone -> neck -> initial queries -> decoder.

Modified from the official ``QueryBased`` detector
(https://github.com/MCG-NJU/AdaMixer), re-written for mmdet 3.x without the
Sparse R-CNN scaffolding (no RPN, no RoI extractor).
"""
from typing import Dict, List, Optional, Tuple

import torch
from mmdet.models.detectors.base import BaseDetector
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.logging import print_log

from ...lors import count_parameters
from .. import deploy


@MODELS.register_module()
class AdaMixer(BaseDetector):
    """AdaMixer (CVPR 2022), and AdaMixer+LORS through the decoder's config.

    Args:
        backbone, neck (dict): mmdet configs (neck: ``ChannelMapping``).
        query_generator (dict): ``InitialQueryGenerator`` config.
        decoder (dict): ``AdaMixerDecoder`` config.
        train_cfg (dict): passed to the decoder (``assigner``).
        test_cfg (dict): passed to the decoder (``max_per_img``).

    LORS inference with dense per-stage weights is an explicit call,
    :meth:`merge_lors` (after the weights are loaded), undone by
    :meth:`unmerge_lors`; ``loss`` refuses a merged model.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 query_generator: dict,
                 decoder: dict,
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(
            data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        if 'merge_lors' in (test_cfg or {}):
            raise TypeError(
                'model.test_cfg.merge_lors is no longer an option: merging '
                'LORS is explicit, call model.merge_lors() once the weights '
                'are loaded (tools/test.py --merge-lors does)')
        self.backbone = MODELS.build(backbone)
        self.neck = MODELS.build(neck)
        self.query_generator = MODELS.build(query_generator)
        self.decoder = MODELS.build(
            dict(decoder, train_cfg=train_cfg, test_cfg=test_cfg))
        self._check_consistency()
        self._log_parameter_counts()

    def _check_consistency(self) -> None:
        """Neck, queries and decoder must agree on C and the levels."""
        C = self.decoder.content_dim
        for name, value in (('neck.out_channels', self.neck.out_channels),
                            ('query_generator.content_dim',
                             self.query_generator.content_dim)):
            if value != C:
                raise ValueError(f'{name}={value} but decoder.content_dim='
                                 f'{C}; they must be equal')
        levels = len(self.neck.lateral_convs)
        strides = self.decoder.featmap_strides
        if len(strides) != levels:
            raise ValueError(
                f'decoder.featmap_strides={strides} has {len(strides)} '
                f'entries but the neck outputs {levels} levels')

    def _log_parameter_counts(self) -> None:
        """LORS's headline numbers: parameters shared by the decoder
        stages, private to one stage, and the total."""
        model, decoder = count_parameters(self), count_parameters(self.decoder)
        print_log(
            f'{type(self).__name__}: {model["total"]:,} parameters, decoder '
            f'{decoder["total"]:,} (shared across stages '
            f'{decoder["shared"]:,}, private to a stage '
            f'{decoder["private"]:,}, other {decoder["other"]:,})',
            logger='current')

    @property
    def num_queries(self) -> int:
        return self.query_generator.num_queries

    # merging LORS: lors_det.models.deploy is the one place; these are its
    # entry points on the model
    @property
    def has_lors(self) -> bool:
        """Whether the model has a LORS stack (LORSA or LORST) to merge."""
        return bool(deploy.lors_stacks(self))

    @property
    def lors_merged(self) -> bool:
        """Whether :meth:`merge_lors` is in effect."""
        return deploy.is_merged(self)

    def merge_lors(self) -> int:
        """Fold every LORS stack into dense per-stage weights, for
        inference (:func:`lors_det.models.deploy.merge_lors`): same outputs
        at AdaMixer's cost per stage. Call it after loading the weights;
        :meth:`unmerge_lors` restores the LORS computation. Returns the
        number of stacks merged.

        Raises:
            ValueError: the model has no LORS stack, or the merged weights
                are not finite.
        """
        return deploy.merge_lors(self)

    def unmerge_lors(self) -> None:
        """Drop the dense weights of :meth:`merge_lors` (no-op if none)."""
        deploy.unmerge_lors(self)

    def extract_feat(self, batch_inputs: torch.Tensor) -> Tuple[torch.Tensor]:
        """(B, 3, H, W) images -> L neck maps (B, C, H_l, W_l)."""
        return self.neck(self.backbone(batch_inputs))

    # Eager under torch.compile: the queries come from python metadata
    # (image sizes); traced, every new image id would recompile the model.
    @torch.compiler.disable
    def _queries(self, batch_data_samples: SampleList):
        return self.query_generator([s.metainfo for s in batch_data_samples])

    def loss(self, batch_inputs: torch.Tensor,
             batch_data_samples: SampleList) -> dict:
        """Losses of all decoder stages (``s{i}.loss_*``)."""
        deploy.check_not_merged(self)
        features = self.extract_feat(batch_inputs)
        xyzr, query = self._queries(batch_data_samples)
        return self.decoder.loss(features, xyzr, query, batch_data_samples)

    def predict(self,
                batch_inputs: torch.Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> SampleList:
        """Detections in ``pred_instances`` (``max_per_img`` per image)."""
        features = self.extract_feat(batch_inputs)
        xyzr, query = self._queries(batch_data_samples)
        results = self.decoder.predict(
            features, xyzr, query, batch_data_samples, rescale=rescale)
        return self.add_pred_to_datasample(batch_data_samples, results)

    def train_step(self, data, optim_wrapper) -> Dict[str, torch.Tensor]:
        """mmengine's ``BaseModel.train_step``: preprocess, losses, update.

        With ``compile=True`` mmengine ``torch.compile``s this method; two of
        its steps run eagerly: the data preprocessor (mmengine's
        ``stack_batch`` fails to trace on torch 2.1) and the update (backward
        is a graph break, and inductor fuses AdamW over all parameters into
        one kernel with more arguments than ctypes can pass). Compiled:
        backbone, neck and decoder (the initial queries and the set loss are
        eager: :meth:`_queries`, ``SetCriterion.forward``).
        """
        with optim_wrapper.optim_context(self):
            data = torch.compiler.disable(self.data_preprocessor)(data, True)
            losses = self._run_forward(data, mode='loss')
        parsed_losses, log_vars = self.parse_losses(losses)
        torch.compiler.disable(optim_wrapper.update_params)(parsed_losses)
        return log_vars

    def _forward(
        self,
        batch_inputs: torch.Tensor,
        batch_data_samples: SampleList = None
    ) -> List[Tuple[torch.Tensor, torch.Tensor]]:
        """Raw per-stage (cls logits, xyxy boxes), e.g. for FLOPs."""
        features = self.extract_feat(batch_inputs)
        if batch_data_samples is None:
            h, w = batch_inputs.shape[-2:]
            metas = [dict(img_shape=(h, w))] * len(batch_inputs)
        else:
            metas = [s.metainfo for s in batch_data_samples]
        xyzr, query = self.query_generator(metas)
        return self.decoder(features, xyzr, query)
