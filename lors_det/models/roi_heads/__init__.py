from .adamixer_decoder import AdaMixerDecoder
from .adamixer_decoder_stage import AdaMixerDecoderStage
from .set_criterion import SetCriterion

__all__ = ['AdaMixerDecoder', 'AdaMixerDecoderStage', 'SetCriterion']
