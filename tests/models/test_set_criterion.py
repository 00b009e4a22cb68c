"""SetCriterion's losses of one stage, against the formulas by hand."""
import torch
from mmdet.structures import DetDataSample
from mmdet.structures.bbox import bbox_overlaps
from mmengine.structures import InstanceData
from torchvision.ops import sigmoid_focal_loss

from lors_det.models import AdaMixerDecoder


def test_losses_of_one_image_by_hand():
    with torch.device('meta'):  # AdaMixer's loss and matching settings
        defaults = AdaMixerDecoder(num_classes=3)
    criterion = defaults.criterion.to('cpu')
    sample = DetDataSample(metainfo=dict(img_shape=(50, 100)))
    gt = torch.tensor([[10., 10., 30., 40.]])
    sample.gt_instances = InstanceData(bboxes=gt, labels=torch.tensor([1]))
    boxes = torch.tensor([[[12., 8., 30., 44.], [60., 20., 90., 45.]]])
    cls_score = torch.tensor([[[-2., 1., -1.], [0.5, -1., -3.]]])
    losses = criterion(cls_score, boxes, [sample])
    # query 0 is matched to the object (1 positive: the losses' divisor)
    target = torch.zeros(1, 2, 3)
    target[0, 0, 1] = 1
    torch.testing.assert_close(
        losses['loss_cls'], 2.0 * sigmoid_focal_loss(
            cls_score, target, alpha=0.25, gamma=2.0, reduction='sum'))
    whwh = torch.tensor([100., 50., 100., 50.])
    torch.testing.assert_close(
        losses['loss_bbox'], 5.0 * ((boxes[0, 0] - gt[0]) / whwh).abs().sum())
    giou = bbox_overlaps(boxes[0, :1], gt, mode='giou', is_aligned=True)
    torch.testing.assert_close(losses['loss_iou'], 2.0 * (1 - giou[0]))
