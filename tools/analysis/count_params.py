"""Count a detector's parameters per component, from its config.

Usage::

    python tools/analysis/count_params.py CONFIG [--json]

Text output: one line describing the decoder the config builds (queries, G,
P_in, P_out, LORSA / LORST / FFN options), then a table with backbone, neck,
query_generator, decoder (with its shared / private / other split and one
line per decoder part: ``stages`` summed over stages, ``mixing.generator``,
``mixing.out_proj``, ``mixing.norms``) and total. ``trainable`` is shown
where it differs from the parameter count (frozen backbone stages, the
frozen initial boxes).

``--json`` prints ONE JSON object: ``backbone``, ``neck``,
``query_generator``, ``decoder``, ``total``, ``decoder_shared``,
``decoder_private`` (ints, all parameters incl. frozen ones).

No weights are loaded (building a model does not load pretrained weights).
The logic lives in :mod:`lors_det.utils.params`.
"""
import argparse
import json


from lors_det.utils.params import (describe_decoder, format_counts,  # noqa
                                   json_summary, load_config, param_counts)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description='Count parameters of a detector config, per component')
    parser.add_argument('config', help='config file path')
    parser.add_argument('--json', action='store_true',
                        help='print one JSON object instead of the table')
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    cfg = load_config(args.config)
    counts = param_counts(cfg)
    if args.json:
        print(json.dumps(json_summary(counts), sort_keys=False))
    else:
        print(args.config)
        print(format_counts(counts, describe_decoder(cfg)))


if __name__ == '__main__':
    main()
