"""Official AdaMixer / AdaMixer+LORS checkpoint keys -> ``lors_det`` keys.

Both official code bases (https://github.com/MCG-NJU/AdaMixer,
https://github.com/li-jl16/LORS) are mmdet 2.x ``QueryBased`` (Sparse R-CNN)
detectors: ``backbone.*``, ``neck.*``, ``rpn_head.*`` (the initial queries)
and ``roi_head.bbox_head.{i}.*`` (decoder stage i). Our detector has
``backbone``, ``neck``, ``query_generator`` and ``decoder`` with
``decoder.stages.{i}.*`` and ONE ``decoder.mixing`` for all stages.

Rename table (``{i}`` = stage, ``{l}``/``{k}`` = index kept as is;
``S = roi_head.bbox_head.{i}``, ``D = decoder.stages.{i}``,
``X = decoder.mixing``, ``Q = query_generator``, ``wb = {weight,bias}``)::

    both checkpoints
      backbone.*                            backbone.*  (unchanged)
      neck.lateral_convs.{l}.conv.wb        neck.lateral_convs.{l}.conv.wb
      neck.gn_out.wb                        neck.gn_out.wb
      rpn_head.init_proposal_bboxes.weight  Q.init_proposal_bboxes.weight
      rpn_head.init_content_features.weight Q.init_content_features.weight
      S.attention.attn.in_proj_weight       D.attention.in_proj_weight
      S.attention.attn.in_proj_bias         D.attention.in_proj_bias
      S.attention.attn.out_proj.wb          D.attention.out_proj.wb
      S.attention_norm.wb, S.ffn_norm.wb    D.attention_norm.wb, D.ffn_norm.wb
      S.iof_tau                             D.iof_tau
      S.ffn.layers.0.0.wb  (mmcv FFN)       D.ffn.fc1.wb
      S.ffn.layers.1.wb                     D.ffn.fc2.wb
      S.cls_fcs.{k}.wb, S.reg_fcs.{k}.wb    D.cls_fcs.{k}.wb, D.reg_fcs.{k}.wb
      S.fc_cls.wb, S.fc_reg.wb              D.fc_cls.wb, D.fc_reg.wb

    AdaMixer only (mixing inside every stage; T = S.sampling_n_mixing)
      T.sampling_offset_generator.0.wb
                                 D.sampling.sampling_offset_generator.wb
      T.adaptive_mixing.parameter_generator.0.wb
                                            X.generator.layers.{i}.wb
      T.adaptive_mixing.out_proj.wb         X.out_proj.layers.{i}.wb
      T.norm.wb                             X.norms.{i}.wb

    LORS only (one roi_head.adaptive_mixing = A for all stages)
      S.sampling.sampling_offset_generator.0.wb
                                 D.sampling.sampling_offset_generator.wb
      A.common_parameter_generator.wb       X.generator.shared_generator.wb
      A.private_parameter_generator.{i}.wb
                                 X.generator.private_generators.{i}.wb
      A.ml_parameters.{i}  (G*K_i, c, r)    X.generator.left_factors.0.{i}
      A.mr_parameters.{i}  (G*K_i, r, c)    X.generator.right_factors.0.{i}
      A.sl_parameters.{i}  (G*K_i, P_out, r)
                                            X.generator.left_factors.1.{i}
      A.sr_parameters.{i}  (G*K_i, r, P_in) X.generator.right_factors.1.{i}
      A.base_out_proj.weight (C, G*P_out*c) X.out_proj.shared_weight
      A.out_weight_add_A.{i} (r_o, G*P_out*c)
                                            X.out_proj.private_A.{i}
      A.out_weight_add_B.{i} (C, r_o)       X.out_proj.private_B.{i}
      A.out_weight_bias.{i}  (C,)           X.out_proj.private_bias.{i}
      A.out_norm.{i}.wb                     X.norms.{i}.wb

Only names change; every tensor is copied as is, because the layouts agree
(checked against the official code):

* the generators' outputs are cut the same way: the official
  ``params.reshape(B*N, G, -1).split([c*c, P_out*P_in])`` with
  ``M.reshape(c, c)`` (in x out, used as ``x @ M``) and
  ``S.reshape(P_out, P_in)`` (used as ``S @ x``) is
  :func:`lors_det.lors.lorsa.split_matrices`; the LORS cores
  ``reshape(B*N, 2, G*K, r, r)`` (index 0: M, 1: S; group-major,
  factor-minor) are :meth:`LORSAGenerator.private_matrices`'s;
* ``F.linear(x, base + B @ A, bias)`` with ``A`` (r, in), ``B`` (out, r) is
  :class:`~lors_det.lors.LORSTLinear` with ``shared_weight``, ``private_A``,
  ``private_B``, ``private_bias`` of the same shapes;
* ``nn.MultiheadAttention`` (inside mmcv's wrapper) and ``nn.Linear``
  weights are the same modules here.

Keys matching no rule raise :class:`ConversionError` naming them; target
keys a complete model would have but the source lacks are returned by
:func:`missing_keys`. Reading, checking and writing the files:
:func:`lors_det.engine.convert.convert_checkpoint_file`.
"""
import re
from collections import OrderedDict
from typing import Callable, Dict, List, Sequence, Tuple

import torch

from ..lors.checks import first_few

Rules = Sequence[Tuple[str, str]]

_STAGE = r'^roi_head\.bbox_head\.(\d+)\.'
_WB = r'(weight|bias)'

#: rules shared by both sources: (regex on the official key, replacement)
COMMON_RULES: Rules = (
    (r'^backbone\.(.+)$', r'backbone.\1'),
    (r'^neck\.lateral_convs\.(\d+)\.conv\.' + _WB + '$',
     r'neck.lateral_convs.\1.conv.\2'),
    (r'^neck\.gn_out\.' + _WB + '$', r'neck.gn_out.\1'),
    (r'^rpn_head\.(init_proposal_bboxes|init_content_features)\.weight$',
     r'query_generator.\1.weight'),
    (_STAGE + r'attention\.attn\.(in_proj_weight|in_proj_bias)$',
     r'decoder.stages.\1.attention.\2'),
    (_STAGE + r'attention\.attn\.out_proj\.' + _WB + '$',
     r'decoder.stages.\1.attention.out_proj.\2'),
    (_STAGE + r'(attention_norm|ffn_norm|fc_cls|fc_reg)\.' + _WB + '$',
     r'decoder.stages.\1.\2.\3'),
    (_STAGE + r'iof_tau$', r'decoder.stages.\1.iof_tau'),
    (_STAGE + r'ffn\.layers\.0\.0\.' + _WB + '$',
     r'decoder.stages.\1.ffn.fc1.\2'),
    (_STAGE + r'ffn\.layers\.1\.' + _WB + '$',
     r'decoder.stages.\1.ffn.fc2.\2'),
    (_STAGE + r'(cls_fcs|reg_fcs)\.(\d+)\.' + _WB + '$',
     r'decoder.stages.\1.\2.\3.\4'),
)

#: AdaMixer (MCG-NJU/AdaMixer): mixing inside each stage
ADAMIXER_RULES: Rules = COMMON_RULES + (
    (_STAGE + r'sampling_n_mixing\.sampling_offset_generator\.0\.' + _WB + '$',
     r'decoder.stages.\1.sampling.sampling_offset_generator.\2'),
    (_STAGE + r'sampling_n_mixing\.adaptive_mixing\.parameter_generator\.0\.' +
     _WB + '$', r'decoder.mixing.generator.layers.\1.\2'),
    (_STAGE + r'sampling_n_mixing\.adaptive_mixing\.out_proj\.' + _WB + '$',
     r'decoder.mixing.out_proj.layers.\1.\2'),
    (_STAGE + r'sampling_n_mixing\.norm\.' + _WB + '$',
     r'decoder.mixing.norms.\1.\2'),
)

_MIX = r'^roi_head\.adaptive_mixing\.'
#: AdaMixer+LORS (li-jl16/LORS): one FactorizedAdaptiveMixing for all stages
LORS_RULES: Rules = COMMON_RULES + (
    (_STAGE + r'sampling\.sampling_offset_generator\.0\.' + _WB + '$',
     r'decoder.stages.\1.sampling.sampling_offset_generator.\2'),
    (_MIX + r'common_parameter_generator\.' + _WB + '$',
     r'decoder.mixing.generator.shared_generator.\1'),
    (_MIX + r'private_parameter_generator\.(\d+)\.' + _WB + '$',
     r'decoder.mixing.generator.private_generators.\1.\2'),
    (_MIX + r'ml_parameters\.(\d+)$',
     r'decoder.mixing.generator.left_factors.0.\1'),
    (_MIX + r'mr_parameters\.(\d+)$',
     r'decoder.mixing.generator.right_factors.0.\1'),
    (_MIX + r'sl_parameters\.(\d+)$',
     r'decoder.mixing.generator.left_factors.1.\1'),
    (_MIX + r'sr_parameters\.(\d+)$',
     r'decoder.mixing.generator.right_factors.1.\1'),
    (_MIX + r'base_out_proj\.weight$',
     r'decoder.mixing.out_proj.shared_weight'),
    (_MIX + r'out_weight_add_A\.(\d+)$',
     r'decoder.mixing.out_proj.private_A.\1'),
    (_MIX + r'out_weight_add_B\.(\d+)$',
     r'decoder.mixing.out_proj.private_B.\1'),
    (_MIX + r'out_weight_bias\.(\d+)$',
     r'decoder.mixing.out_proj.private_bias.\1'),
    (_MIX + r'out_norm\.(\d+)\.' + _WB + '$', r'decoder.mixing.norms.\1.\2'),
)

SOURCES = {
    'adamixer':
    dict(rules=ADAMIXER_RULES, name='AdaMixer (MCG-NJU/AdaMixer, mmdet 2.x)'),
    'lors':
    dict(rules=LORS_RULES, name='AdaMixer+LORS (li-jl16/LORS, mmdet 2.x)'),
}

#: keys every decoder stage has (besides its cls_fcs / reg_fcs)
_STAGE_KEYS = tuple([
    f'attention.{n}' for n in ('in_proj_weight', 'in_proj_bias',
                               'out_proj.weight', 'out_proj.bias')
] + [
    f'{m}.{p}'
    for m in ('attention_norm', 'ffn_norm', 'ffn.fc1', 'ffn.fc2',
              'sampling.sampling_offset_generator', 'fc_cls', 'fc_reg')
    for p in ('weight', 'bias')
] + ['iof_tau'])


class ConversionError(ValueError):
    """A source key no rule knows, or two keys with the same target."""


def _rename(state_dict: Dict[str, torch.Tensor],
            rules: Rules) -> 'OrderedDict[str, torch.Tensor]':
    compiled = [(re.compile(p), r) for p, r in rules]
    out, unknown, sources = OrderedDict(), [], {}
    for key, value in state_dict.items():
        for pattern, repl in compiled:
            if pattern.match(key):
                new = pattern.sub(repl, key)
                break
        else:
            unknown.append(key)
            continue
        if new in out:
            raise ConversionError(
                f'{sources[new]!r} and {key!r} both map to {new!r}')
        sources[new] = key
        out[new] = value
    if unknown:
        raise ConversionError(
            f'{len(unknown)} key(s) of the source checkpoint match no '
            'conversion rule (wrong converter for this checkpoint?): ' +
            first_few(unknown))
    return out


def _strip_module_prefix(state_dict):
    if state_dict and all(k.startswith('module.') for k in state_dict):
        return OrderedDict(
            (k[len('module.'):], v) for k, v in state_dict.items())
    return state_dict


def convert_adamixer_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict':
    """Official AdaMixer state dict -> ``lors_det`` AdaMixer state dict."""
    return _rename(_strip_module_prefix(state_dict), ADAMIXER_RULES)


def convert_lors_state_dict(
        state_dict: Dict[str, torch.Tensor]) -> 'OrderedDict':
    """Official AdaMixer+LORS state dict -> ``lors_det`` (LORSA + LORST
    mixing) state dict."""
    return _rename(_strip_module_prefix(state_dict), LORS_RULES)


CONVERTERS: Dict[str, Callable] = dict(
    adamixer=convert_adamixer_state_dict, lors=convert_lors_state_dict)


def stage_indices(keys, pattern: str) -> List[int]:
    r"""The sorted distinct integers captured by ``pattern``'s group 1 in
    ``keys``, e.g. the stage indices of ``decoder\.stages\.(\d+)\.``."""
    regex = re.compile(pattern)
    return sorted(
        {int(m.group(1))
         for k in keys for m in [regex.match(k)] if m})


def missing_keys(converted: Dict[str, torch.Tensor], source: str) -> List[str]:
    """Keys a complete converted model of this kind would have but
    ``converted`` lacks (stage count taken from the keys present)."""
    keys = set(converted)
    stages = stage_indices(keys, r'^decoder\.stages\.(\d+)\.')
    stages += stage_indices(keys, r'^decoder\.mixing\.norms\.(\d+)\.')
    n = max(stages) + 1 if stages else 0
    expected = [
        'query_generator.init_proposal_bboxes.weight',
        'query_generator.init_content_features.weight', 'neck.gn_out.weight',
        'neck.gn_out.bias'
    ]
    branch = sorted({
        k.split('.', 3)[3]
        for k in keys if re.match(r'^decoder\.stages\.\d+\.(cls|reg)_fcs\.', k)
    })
    for i in range(n):
        expected += [
            f'decoder.stages.{i}.{s}' for s in (*_STAGE_KEYS, *branch)
        ]
        expected += [
            f'decoder.mixing.norms.{i}.{p}' for p in ('weight', 'bias')
        ]
        if source == 'adamixer':
            expected += [
                f'decoder.mixing.{m}.layers.{i}.{p}'
                for m in ('generator', 'out_proj') for p in ('weight', 'bias')
            ]
        else:
            g = 'decoder.mixing.generator'
            expected += [
                f'{g}.private_generators.{i}.{p}' for p in ('weight', 'bias')
            ]
            expected += [
                f'{g}.{side}_factors.{j}.{i}' for side in ('left', 'right')
                for j in (0, 1)
            ]
            expected += [
                f'decoder.mixing.out_proj.private_{p}.{i}'
                for p in ('A', 'B', 'bias')
            ]
    if source == 'lors' and n:
        expected += [
            'decoder.mixing.generator.shared_generator.weight',
            'decoder.mixing.generator.shared_generator.bias',
            'decoder.mixing.out_proj.shared_weight'
        ]
    missing = [k for k in expected if k not in keys]
    if n == 0:
        missing.append('decoder.stages.* (no decoder stage found)')
    if not any(k.startswith('backbone.') for k in keys):
        missing.append('backbone.* (no backbone key found)')
    if not any(k.startswith('neck.lateral_convs.') for k in keys):
        missing.append('neck.lateral_convs.* (no neck conv found)')
    return missing
