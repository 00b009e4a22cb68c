from .adamixer_decoder import AdaMixerDecoder
from .adamixer_decoder_stage import AdaMixerDecoderStage
from .non_finite import NonFinitePredictionError, check_finite_predictions
from .set_criterion import SetCriterion

__all__ = [
    'AdaMixerDecoder', 'AdaMixerDecoderStage', 'NonFinitePredictionError',
    'SetCriterion', 'check_finite_predictions'
]
