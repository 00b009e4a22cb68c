from .convert import convert_adamixer_state_dict, convert_lors_state_dict
from .params import json_summary, model_param_counts, param_counts

__all__ = ['convert_adamixer_state_dict', 'convert_lors_state_dict',
           'param_counts', 'model_param_counts', 'json_summary']
