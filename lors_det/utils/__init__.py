from .dist import apply_cpu_ddp_cfg, init_cpu_dist_if_needed

__all__ = ['init_cpu_dist_if_needed', 'apply_cpu_ddp_cfg']
