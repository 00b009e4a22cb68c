"""``--resume`` in a copied work_dir (``cp -r WD WD2``) uses WD2's own
checkpoints: ``last_checkpoint`` still holds WD's absolute path, and
following it would continue WD's run without ever reading WD2's files."""
import shutil

import pytest
import torch

from lors_det.engine.resume import ResumeError, find_resume_checkpoint


def _fake_ckpt(path, it):
    torch.save(dict(meta=dict(iter=it), state_dict={'w': torch.ones(1)}), path)


@pytest.fixture
def original(tmp_path):
    work_dir = tmp_path / 'WD'
    work_dir.mkdir()
    for it in (2, 4):
        _fake_ckpt(work_dir / f'iter_{it}.pth', it)
    (work_dir / 'last_checkpoint').write_text(str(work_dir / 'iter_4.pth'))
    return work_dir


def test_copied_work_dir_resumes_from_its_own_checkpoint(original):
    copy = original.parent / 'WD2'
    shutil.copytree(original, copy)
    logs = []
    path, ckpt = find_resume_checkpoint(str(copy), logs.append)
    assert path == str(copy / 'iter_4.pth') and ckpt['meta']['iter'] == 4
    assert any('outside the work_dir' in m and 'not followed' in m
               for m in logs), logs


def test_copied_work_dir_with_a_damaged_checkpoint_says_so(original):
    copy = original.parent / 'WD2'
    shutil.copytree(original, copy)
    (copy / 'iter_4.pth').write_bytes(b'PK\x03\x04 half')
    logs = []
    path, ckpt = find_resume_checkpoint(str(copy), logs.append)
    # WD2's newest good file, not WD's iter_4 named by last_checkpoint
    assert path == str(copy / 'iter_2.pth') and ckpt['meta']['iter'] == 2
    assert any(
        str(copy / 'iter_4.pth') in m and 'does not load' in m
        for m in logs), logs
    # none of WD2's loads: an error naming WD's file as the way out
    (copy / 'iter_2.pth').write_bytes(b'')
    with pytest.raises(ResumeError) as e:
        find_resume_checkpoint(str(copy), logs.append)
    assert 'none of its checkpoints loads' in str(e.value)
    assert f'--resume {original / "iter_4.pth"}' in str(e.value)


def test_pointer_outside_an_empty_work_dir_is_followed(original, tmp_path):
    """The checkpoint hook's out_dir elsewhere: work_dir holds only the
    pointer."""
    work_dir = tmp_path / 'logs_only'
    work_dir.mkdir()
    (work_dir / 'last_checkpoint').write_text(str(original / 'iter_4.pth'))
    logs = []
    path, _ = find_resume_checkpoint(str(work_dir), logs.append)
    assert path == str(original / 'iter_4.pth')
    assert any('no checkpoint of its own' in m for m in logs), logs
