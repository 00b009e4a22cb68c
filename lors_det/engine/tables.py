"""The tables the tools print: one formatter for each of the two forms.

* :func:`text_table` for the terminal (``count_params.py``,
  ``get_flops.py``, ``lorita_compress.py``): the first column left-aligned,
  the others right-aligned, a dashed rule under the header.
* :func:`markdown_table` for the docs (``benchmark.py``,
  ``params_table.py``, ``compare_param_efficiency.py``).

Cells are strings; the callers format their numbers.
"""
from typing import Sequence

Row = Sequence[str]


def text_table(header: Row, rows: Sequence[Row]) -> str:
    """Aligned columns, e.g. ``text_table(('part', 'parameters'),
    [('neck', '61,824')])``; trailing blanks are stripped."""
    widths = [
        max(len(r[i]) for r in (header, *rows)) for i in range(len(header))
    ]

    def line(r):
        return '  '.join([r[0].ljust(widths[0])] +
                         [r[i].rjust(widths[i])
                          for i in range(1, len(r))]).rstrip()

    return '\n'.join([line(header), '  '.join('-' * w for w in widths)] +
                     [line(r) for r in rows])


def markdown_table(header: Row,
                   rows: Sequence[Row],
                   numeric: Sequence[bool] = ()) -> str:
    """A GitHub markdown table; ``numeric[i]`` right-aligns column i."""
    rule = [
        '---:' if i < len(numeric) and numeric[i] else '---'
        for i in range(len(header))
    ]
    return '\n'.join(
        ['| ' + ' | '.join(header) + ' |', '|' + '|'.join(rule) + '|'] +
        ['| ' + ' | '.join(r) + ' |' for r in rows])
