"""lors_det/engine/tables.py: the one formatter of the tools' tables."""
from lors_det.engine.tables import markdown_table, text_table


def test_text_table_aligns_first_column_left_and_the_rest_right():
    out = text_table(('part', 'parameters', 'shared'),
                     [('neck', '61,824', ''), ('decoder', '995,330', '7')])
    assert out.splitlines() == [
        'part     parameters  shared',
        '-------  ----------  ------',
        'neck         61,824',  # trailing blanks stripped
        'decoder     995,330       7',
    ]


def test_markdown_table_right_aligns_numeric_columns():
    out = markdown_table(('config', 'AP', 'note'), [('a', '9.6', 'x')],
                         numeric=(False, True))
    assert out.splitlines() == [
        '| config | AP | note |', '|---|---:|---|', '| a | 9.6 | x |'
    ]
