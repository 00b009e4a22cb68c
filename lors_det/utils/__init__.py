from .convert import convert_adamixer_state_dict, convert_lors_state_dict
from .dist import apply_cpu_ddp_cfg, init_cpu_dist_if_needed, setup_cpu_dist
from .params import json_summary, model_param_counts, param_counts

__all__ = ['init_cpu_dist_if_needed', 'apply_cpu_ddp_cfg', 'setup_cpu_dist',
           'convert_adamixer_state_dict', 'convert_lors_state_dict',
           'param_counts', 'model_param_counts', 'json_summary']
