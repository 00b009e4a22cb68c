"""AdaMixer's multi-stage decoder (deep supervision), with plain or LORS
mixing.

Modified from the official AdaMixer ``AdaMixerDecoder`` and the LORS
version of it (https://github.com/MCG-NJU/AdaMixer,
https://github.com/li-jl16/LORS), re-written for mmdet 3.x.
"""
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from mmdet.registry import MODELS
from mmdet.structures import SampleList
from mmengine.model import BaseModule
from mmengine.structures import InstanceData

from ...lors.checks import (check_keys, check_number, check_positive,
                            config_block)
from ..layers import AdaptiveMixing, refine_xyzr, xyzr_to_xyxy
from .adamixer_decoder_stage import AdaMixerDecoderStage
from .non_finite import (NON_FINITE_PREDICTIONS_KEY, NonFinitePredictionError,
                         check_finite_predictions, report_or_raise)
from .set_criterion import SetCriterion

StageOutput = Tuple[torch.Tensor, torch.Tensor]  # cls (B,N,K), xyxy (B,N,4)

# the options of the config dicts the decoder receives (it sets the other
# stage and mixing arguments itself)
STAGE_KEYS = ('num_heads', 'feedforward_channels', 'num_cls_fcs',
              'num_reg_fcs', 'ffn')
MIXING_KEYS = ('lorsa', 'lorst', 'out_proj_lorita')
TRAIN_CFG_KEYS = ('assigner', )
TEST_CFG_KEYS = ('max_per_img', )


@MODELS.register_module()
class AdaMixerDecoder(BaseModule):
    """``num_stages`` AdaMixer stages refining queries, a loss per stage.

    Args:
        num_classes (int): foreground classes.
        num_stages (int): N_s decoder stages (6).
        stage_loss_weights (list[float], optional): per-stage loss weight.
        featmap_strides (list[int]): strides of the neck outputs.
        content_dim (int): C, query size (= neck channels).
        num_groups (int): G sampling groups (AdaMixer 4, LORS 2).
        in_points (int): P_in per group (AdaMixer 32, LORS 64).
        out_points (int): P_out per group (128).
        stage (dict): other :class:`AdaMixerDecoderStage` args (``num_heads``,
            ``feedforward_channels``, ``num_cls_fcs``, ``num_reg_fcs``,
            ``ffn``).
        mixing (dict): :class:`AdaptiveMixing` options: ``lorsa``,
            ``lorst``, ``out_proj_lorita`` (None everywhere: AdaMixer).
        loss_cls, loss_bbox, loss_iou (dict): loss configs.
        train_cfg (dict): ``assigner`` config.
        test_cfg (dict): ``max_per_img`` (default: number of queries).

    Parameter names: ``stages.{i}.*`` (per stage), ``mixing.*`` (the
    stack of mixings, shared parts owned once here).
    """

    def __init__(self,
                 num_classes: int = 80,
                 num_stages: int = 6,
                 stage_loss_weights: Optional[Sequence[float]] = None,
                 featmap_strides: Sequence[int] = (4, 8, 16, 32),
                 content_dim: int = 256,
                 num_groups: int = 4,
                 in_points: int = 32,
                 out_points: int = 128,
                 stage: dict = dict(),
                 mixing: dict = dict(),
                 loss_cls: dict = dict(
                     type='FocalLoss',
                     use_sigmoid=True,
                     gamma=2.0,
                     alpha=0.25,
                     loss_weight=2.0),
                 loss_bbox: dict = dict(type='L1Loss', loss_weight=5.0),
                 loss_iou: dict = dict(type='GIoULoss', loss_weight=2.0),
                 train_cfg: Optional[dict] = None,
                 test_cfg: Optional[dict] = None,
                 init_cfg: Optional[dict] = None):
        super().__init__(init_cfg)
        # the sizes the decoder uses itself; num_groups, in_points and
        # out_points are checked by the sampling and the mixing that use them
        for name, value in (('num_classes', num_classes),
                            ('num_stages', num_stages), ('content_dim',
                                                         content_dim)):
            check_positive(f'decoder.{name}', value)
        weights = [1.0] * num_stages if stage_loss_weights is None else list(
            stage_loss_weights)
        if len(weights) != num_stages:
            raise ValueError(
                f'stage_loss_weights has {len(weights)} entries but '
                f'num_stages={num_stages}')
        for i, weight in enumerate(weights):
            check_number(f'decoder.stage_loss_weights[{i}]', weight)
        stage = check_keys('decoder.stage', stage, STAGE_KEYS)
        mixing = check_keys('decoder.mixing', mixing, MIXING_KEYS)
        train_cfg = check_keys('model.train_cfg', train_cfg, TRAIN_CFG_KEYS)
        test_cfg = check_keys('model.test_cfg', test_cfg, TEST_CFG_KEYS)
        if 'max_per_img' in test_cfg:
            check_positive('model.test_cfg.max_per_img',
                           test_cfg['max_per_img'])
        self.num_stages = num_stages
        self.content_dim = content_dim
        self.stage_loss_weights = weights
        self.featmap_strides = list(featmap_strides)
        self.test_cfg = test_cfg
        with config_block('decoder.stage'):
            self.stages = torch.nn.ModuleList(
                AdaMixerDecoderStage(
                    num_classes=num_classes,
                    content_dim=content_dim,
                    in_points=in_points,
                    num_groups=num_groups,
                    **stage) for _ in range(num_stages))
        with config_block('decoder'):
            self.mixing = AdaptiveMixing(
                content_dim=content_dim,
                feat_channels=content_dim,
                in_points=in_points,
                out_points=out_points,
                num_groups=num_groups,
                num_stages=num_stages,
                **mixing)
        self.criterion = SetCriterion(
            num_classes,
            train_cfg.get(
                'assigner',
                dict(
                    type='HungarianAssigner',
                    match_costs=[
                        dict(type='FocalLossCost', weight=2.0),
                        dict(type='BBoxL1Cost', weight=5.0, box_format='xyxy'),
                        dict(type='IoUCost', iou_mode='giou', weight=2.0)
                    ])), loss_cls, loss_bbox, loss_iou)

    def forward(self, features: Sequence[torch.Tensor], xyzr: torch.Tensor,
                query: torch.Tensor) -> List[StageOutput]:
        """Run all stages.

        Args:
            features (list[Tensor]): neck maps (B, C, H_l, W_l).
            xyzr (Tensor): (B, N, 4) initial boxes.
            query (Tensor): (B, N, C) initial content.

        Returns:
            list[tuple[Tensor, Tensor]]: per stage, cls logits (B, N, K) and
            refined boxes (B, N, 4) xyxy in pixels of the padded input.
        """
        outputs = []
        for i, stage in enumerate(self.stages):
            # the stage calls the decoder's one mixing with its index (a
            # lambda: dynamo traces it, functools.partial breaks the graph)
            cls_score, delta, query = stage(
                features,
                self.featmap_strides,
                xyzr,
                query,
                lambda x, q, i=i: self.mixing(x, q, i))
            new_xyzr = refine_xyzr(xyzr, delta)
            outputs.append((cls_score, xyzr_to_xyxy(new_xyzr)))
            # boxes are refined stage by stage; gradients do not flow
            # through the box chain (official: query_xyzr.detach())
            xyzr = new_xyzr.detach()
        return outputs

    def loss(self, features: Sequence[torch.Tensor], xyzr: torch.Tensor,
             query: torch.Tensor,
             batch_data_samples: SampleList) -> Dict[str, torch.Tensor]:
        """Deep supervision: ``s{i}.loss_cls/loss_bbox/loss_iou`` per stage.

        A stage that predicted NaN/inf logits or boxes (divergence) is
        caught before the Hungarian matching (which would fail on them
        naming nothing): inside ``report_non_finite_predictions`` (the
        optim wrapper's) the error is reported there and the loss is
        ``{loss_non_finite_predictions: NaN}``; otherwise it is raised.

        Raises:
            NonFinitePredictionError: naming the first such stage, when no
                caller handles the report.
        """
        outputs = self.forward(features, xyzr, query)
        try:
            check_finite_predictions(outputs)
        except NonFinitePredictionError as error:
            report_or_raise(error)
            nan = outputs[0][0].new_tensor(float('nan'))
            return {NON_FINITE_PREDICTIONS_KEY: nan}
        losses = {}
        for i, (cls_score, boxes) in enumerate(outputs):
            for name, value in self.criterion(cls_score, boxes,
                                              batch_data_samples).items():
                losses[f's{i}.{name}'] = value * self.stage_loss_weights[i]
        return losses

    def predict(self,
                features: Sequence[torch.Tensor],
                xyzr: torch.Tensor,
                query: torch.Tensor,
                batch_data_samples: SampleList,
                rescale: bool = True) -> List[InstanceData]:
        """Top-k (query, class) pairs of the last stage per image.

        Returns:
            list[InstanceData]: ``bboxes`` (k, 4) xyxy in original-image
            pixels when ``rescale``, ``scores`` (k,), ``labels`` (k,), with
            k = ``test_cfg.max_per_img`` (default: all N queries).
        """
        cls_score, boxes = self.forward(features, xyzr, query)[-1]
        B, N, K = cls_score.shape
        scores = cls_score.sigmoid().flatten(1)  # (B, N * K)
        k = min(self.test_cfg.get('max_per_img', N), N * K)
        results = []
        for i, sample in enumerate(batch_data_samples):
            top_scores, index = scores[i].topk(k)
            bboxes = boxes[i, index // K]
            if rescale:
                scale = bboxes.new_tensor(sample.metainfo['scale_factor'])
                bboxes = bboxes / scale.repeat(2)
            results.append(
                InstanceData(
                    bboxes=bboxes, scores=top_scores, labels=index % K))
        return results
