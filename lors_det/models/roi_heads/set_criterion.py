# Modified from MCG-NJU/AdaMixer, bbox_heads/adamixer_decoder_stage.py (loss)
"""Set-prediction loss of one decoder stage: Hungarian matching, then focal,
L1 and GIoU losses on the matched pairs (AdaMixer's recipe)."""
from typing import Dict, List

import torch
import torch.nn as nn
from mmdet.registry import MODELS, TASK_UTILS
from mmdet.structures import SampleList
from mmdet.utils import reduce_mean
from mmengine.structures import InstanceData


class SetCriterion(nn.Module):
    """Loss of one stage's (cls, box) predictions against the ground truth.

    Args:
        num_classes (int): foreground classes; background label is
            ``num_classes``.
        assigner (dict): a mmdet Hungarian assigner config.
        loss_cls (dict): focal loss config (AdaMixer: weight 2.0).
        loss_bbox (dict): L1 loss on boxes normalised by the image size
            (weight 5.0).
        loss_iou (dict): GIoU loss on pixel boxes (weight 2.0).
    """

    def __init__(self, num_classes: int, assigner: dict, loss_cls: dict,
                 loss_bbox: dict, loss_iou: dict):
        super().__init__()
        self.num_classes = num_classes
        self.assigner = TASK_UTILS.build(assigner)
        self.loss_cls = MODELS.build(loss_cls)
        self.loss_bbox = MODELS.build(loss_bbox)
        self.loss_iou = MODELS.build(loss_iou)

    def match(self, cls_score: torch.Tensor, boxes: torch.Tensor,
              batch_data_samples: SampleList) -> List[torch.Tensor]:
        """Per image, the matched gt index of every query (-1: background).

        Args:
            cls_score (Tensor): (B, N, K) logits.
            boxes (Tensor): (B, N, 4) xyxy boxes in pixels.
        """
        matches = []
        for i, sample in enumerate(batch_data_samples):
            pred = InstanceData(
                scores=cls_score[i].detach(), bboxes=boxes[i].detach())
            result = self.assigner.assign(
                pred, sample.gt_instances, img_meta=sample.metainfo)
            matches.append(result.gt_inds - 1)
        return matches

    # Eager under torch.compile (mmengine's compile=True): the matching runs
    # scipy on the CPU and gives a new number of matched pairs every batch,
    # so a compiled loss would break its graph and recompile with dynamic
    # shapes, which torch 2.1 fails on (inductor: the assigner's index_put_;
    # dynamo: the focal loss's one_hot). The predictions it scores come from
    # the compiled decoder, and their gradients flow back into it.
    @torch.compiler.disable
    def forward(self, cls_score: torch.Tensor, boxes: torch.Tensor,
                batch_data_samples: SampleList) -> Dict[str, torch.Tensor]:
        """Losses ``loss_cls``, ``loss_bbox``, ``loss_iou`` of one stage.

        Args:
            cls_score (Tensor): (B, N, K) logits.
            boxes (Tensor): (B, N, 4) xyxy boxes in pixels.
            batch_data_samples (list[DetDataSample]): with ``gt_instances``.
        """
        # losses and matching in float32 under autocast (float64 stays)
        dtype = torch.promote_types(cls_score.dtype, torch.float32)
        cls_score, boxes = cls_score.to(dtype), boxes.to(dtype)
        B, N, K = cls_score.shape
        labels = cls_score.new_full((B, N), self.num_classes, dtype=torch.long)
        pred_pos, gt_pos, whwh_pos = [], [], []
        for i, (sample, match) in enumerate(
                zip(batch_data_samples,
                    self.match(cls_score, boxes, batch_data_samples))):
            pos = match >= 0
            gt = sample.gt_instances
            labels[i, pos] = gt.labels[match[pos]]
            pred_pos.append(boxes[i, pos])
            gt_pos.append(gt.bboxes[match[pos]])
            h, w = sample.metainfo['img_shape'][:2]
            whwh_pos.append(
                boxes.new_tensor([w, h, w, h]).expand(int(pos.sum()), 4))
        pred_pos, gt_pos = torch.cat(pred_pos), torch.cat(gt_pos)
        whwh_pos = torch.cat(whwh_pos)
        # clamp: the official code divides by 0 when no image of the whole
        # batch (all GPUs) has an object; identical otherwise
        avg_factor = reduce_mean(cls_score.new_tensor(
            len(pred_pos))).clamp(min=1.0).item()
        losses = dict(
            loss_cls=self.loss_cls(
                cls_score.reshape(B * N, K),
                labels.flatten(),
                avg_factor=avg_factor))
        if len(pred_pos):
            losses['loss_bbox'] = self.loss_bbox(
                pred_pos / whwh_pos, gt_pos / whwh_pos, avg_factor=avg_factor)
            losses['loss_iou'] = self.loss_iou(
                pred_pos, gt_pos, avg_factor=avg_factor)
        else:  # keep the graph connected and the keys stable
            losses['loss_bbox'] = boxes.sum() * 0
            losses['loss_iou'] = boxes.sum() * 0
        return losses
