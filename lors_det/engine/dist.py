"""CPU-only multi-process (DDP) support for ``tools/train.py``/``test.py``.

Why this exists
---------------
mmengine's ``init_dist('pytorch' | 'slurm' | 'mpi')`` unconditionally calls
``torch.cuda.set_device(local_rank)``, which aborts with "Found no NVIDIA
driver" on a machine without a GPU, so ``tools/dist_train.sh CONFIG 2`` cannot
be used for a CPU smoke run.  Two facts make a small, non-invasive work-around
possible:

* ``Runner.setup_env`` only calls ``init_dist`` when no process group exists
  yet (``if self.distributed and not is_distributed()``).  Initialising
  ``torch.distributed`` ourselves *before* the Runner is built therefore makes
  mmengine skip its own (CUDA-only) initialisation; ``env_cfg.dist_cfg`` (with
  its usual ``backend='nccl'``) is then never used to create the group.
* ``Runner.wrap_model`` builds ``MMDistributedDataParallel`` with
  ``device_ids=[LOCAL_RANK]``, which DDP rejects for CPU modules.  When a
  ``model_wrapper_cfg`` is given, mmengine passes ``device_ids`` only as a
  *default* argument and ``Registry.build`` merges defaults with
  ``cfg.setdefault``, so an explicit ``device_ids=None`` in the config wins.

Behaviour
---------
:func:`init_cpu_dist_if_needed` is a no-op (returns ``False``) when
``launcher == 'none'`` or CUDA is available, i.e. on GPU machines mmengine's
own path is used unchanged.  Otherwise it derives ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` from the launcher's
environment (torchrun sets them directly; slurm / OpenMPI variables are
translated the same way mmengine does), initialises a ``gloo`` process group
(``init_method='env://'``) and returns ``True``.

:func:`apply_cpu_ddp_cfg` then edits the config in place for CPU DDP:

* ``model_wrapper_cfg`` defaults to ``dict(type='MMDistributedDataParallel',
  device_ids=None, broadcast_buffers=False,
  find_unused_parameters=cfg.find_unused_parameters)`` - the same arguments
  mmengine uses, minus the GPU id.  A user-provided DDP-type wrapper config
  only gets ``device_ids=None`` added (if it does not set it).
* ``env_cfg.dist_cfg.backend`` is set to ``'gloo'`` so the dumped config
  reflects the backend actually in use (mmengine does not read it again
  once the group exists).
* ``cfg.sync_bn`` is dropped with a warning: torch/mmcv SyncBN are CUDA-only.

Both tools call the two functions right after the config is loaded and before
the Runner is built.
"""
import datetime
import os
import subprocess
import warnings
from typing import Optional

import torch
import torch.distributed as torch_dist

__all__ = ['init_cpu_dist_if_needed', 'apply_cpu_ddp_cfg', 'setup_cpu_dist']


def _set_env_from_launcher(launcher: str) -> None:
    """Fill the torchrun-style env vars (RANK, WORLD_SIZE, LOCAL_RANK,
    MASTER_ADDR, MASTER_PORT) from the given launcher's environment."""
    env = os.environ
    if launcher == 'pytorch':
        missing = [k for k in ('RANK', 'WORLD_SIZE') if k not in env]
        if missing:
            raise RuntimeError(
                f'--launcher pytorch needs the environment variables set by '
                f'torchrun (tools/dist_train.sh); missing: {missing}')
    elif launcher == 'slurm':
        env['RANK'] = env['SLURM_PROCID']
        env['WORLD_SIZE'] = env['SLURM_NTASKS']
        env['LOCAL_RANK'] = env.get('SLURM_LOCALID', '0')
        if 'MASTER_ADDR' not in env:
            node_list = env['SLURM_NODELIST']
            env['MASTER_ADDR'] = subprocess.getoutput(
                f'scontrol show hostname {node_list} | head -n1')
    elif launcher == 'mpi':
        env['RANK'] = env['OMPI_COMM_WORLD_RANK']
        env['WORLD_SIZE'] = env['OMPI_COMM_WORLD_SIZE']
        env['LOCAL_RANK'] = env.get('OMPI_COMM_WORLD_LOCAL_RANK', '0')
        if 'MASTER_ADDR' not in env:
            raise KeyError('The environment variable MASTER_ADDR is not set')
    else:
        raise ValueError(f'Invalid launcher type: {launcher}')
    env.setdefault('LOCAL_RANK', '0')
    env.setdefault('MASTER_ADDR', '127.0.0.1')
    # 29500 is torch.distributed's default port
    env.setdefault('MASTER_PORT', '29500')


def init_cpu_dist_if_needed(launcher: str,
                            timeout: Optional[float] = None) -> bool:
    """Initialise a gloo process group for CPU-only distributed runs.

    Args:
        launcher (str): ``'none'``, ``'pytorch'``, ``'slurm'`` or ``'mpi'``.
        timeout (float, optional): Collective timeout in seconds (same
            meaning as ``env_cfg.dist_cfg.timeout``). Defaults to torch's.

    Returns:
        bool: ``True`` if this is a CPU distributed run (the process group is
        initialised on return), ``False`` if nothing was done (non-distributed
        launcher, or CUDA available so mmengine initialises NCCL itself).
    """
    if launcher == 'none' or torch.cuda.is_available():
        return False
    if not torch_dist.is_available():
        raise RuntimeError('torch.distributed is not available in this build '
                           'of PyTorch; cannot run with --launcher '
                           f'{launcher} on CPU')
    if torch_dist.is_initialized():
        return True
    _set_env_from_launcher(launcher)
    kwargs = {}
    if timeout is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=timeout)
    torch_dist.init_process_group(
        backend='gloo',
        init_method='env://',
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        **kwargs)
    return True


def apply_cpu_ddp_cfg(cfg) -> None:
    """Edit an mmengine ``Config`` in place so that ``Runner.wrap_model``
    builds a CPU-compatible DDP wrapper (see the module docstring)."""
    from mmengine.config import ConfigDict
    from mmengine.registry import MODEL_WRAPPERS
    from torch.nn.parallel import DistributedDataParallel

    wrapper_cfg = cfg.get('model_wrapper_cfg', None)
    if wrapper_cfg is None:
        cfg.model_wrapper_cfg = ConfigDict(
            type='MMDistributedDataParallel',
            device_ids=None,
            broadcast_buffers=False,
            find_unused_parameters=cfg.get('find_unused_parameters', False))
    else:
        wrapper_type = wrapper_cfg.get('type', 'MMDistributedDataParallel')
        if isinstance(wrapper_type, str):
            wrapper_type = MODEL_WRAPPERS.get(wrapper_type)
        if isinstance(wrapper_type, type) and issubclass(
                wrapper_type, DistributedDataParallel):
            wrapper_cfg.setdefault('device_ids', None)

    env_cfg = cfg.get('env_cfg', None)
    if env_cfg is None:
        cfg.env_cfg = ConfigDict(dist_cfg=dict(backend='gloo'))
    else:
        if env_cfg.get('dist_cfg', None) is None:
            env_cfg.dist_cfg = ConfigDict()
        env_cfg.dist_cfg.backend = 'gloo'

    if cfg.get('sync_bn', None) is not None:
        warnings.warn(f'sync_bn={cfg.sync_bn!r} is CUDA-only; ignored for '
                      'CPU distributed training.')
        cfg.pop('sync_bn')


def setup_cpu_dist(cfg, launcher: str) -> None:
    """What ``tools/train.py`` and ``tools/test.py`` call before building the
    Runner: on a machine without CUDA and with a launcher, create the gloo
    process group (the Runner then skips its CUDA-only ``init_dist``) and
    make the DDP wrapper CPU-safe. A no-op on GPU machines."""
    dist_cfg = (cfg.get('env_cfg') or {}).get('dist_cfg') or {}
    if init_cpu_dist_if_needed(launcher, dist_cfg.get('timeout')):
        apply_cpu_ddp_cfg(cfg)
