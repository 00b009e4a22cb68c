"""mmdet modules of lors_det; importing registers them in mmdet's MODELS."""
from .dense_heads import InitialQueryGenerator
from .detectors import AdaMixer
from .layers import FFN, AdaptiveMixing, AdaptiveSampling
from .lors_wrapper import LORSWrapper
from .necks import ChannelMapping
from .roi_heads import (AdaMixerDecoder, AdaMixerDecoderStage,
                        NonFinitePredictionError)

__all__ = [
    'AdaMixer', 'AdaMixerDecoder', 'AdaMixerDecoderStage', 'AdaptiveMixing',
    'AdaptiveSampling', 'ChannelMapping', 'FFN', 'InitialQueryGenerator',
    'LORSWrapper', 'NonFinitePredictionError'
]
