"""The converters name a few missing keys and the count, not all of them
(a checkpoint of another model misses hundreds)."""
import torch

from lors_det.engine import convert


def test_many_missing_keys_are_a_count_and_a_few_names(tmp_path, monkeypatch):
    monkeypatch.setitem(convert.CONVERTERS, 'lors', lambda sd: dict(sd))
    monkeypatch.setattr(convert, 'missing_keys',
                        lambda new, source: [f'key{i}' for i in range(233)])
    src = tmp_path / 'src.pth'
    torch.save({'decoder.stages.0.w': torch.ones(1)}, src)
    lines = []
    convert.convert_checkpoint_file(
        str(src), str(tmp_path / 'out.pth'), 'lors', log=lines.append)
    warning = [line for line in lines if 'target key(s) missing' in line]
    assert len(warning) == 1 and len(lines) < 10, lines
    assert '233 target key(s) missing' in warning[0]
    assert 'key0, key1, key2, key3, key4, ... (228 more)' in warning[0]
    assert 'key5' not in warning[0]
