"""Atomic writes: permissions follow the umask, which is never changed; failures leave the target as it was."""
import os
import stat

import pytest

from src.utils import atomic_path, write_text


def test_atomic_write_gets_the_usual_permissions_and_leaves_the_umask_alone(tmp_path):
    old = os.umask(0o027)
    try:
        write_text(tmp_path / "a.txt", "x")
        assert os.umask(0o027) == 0o027  # nothing changed it meanwhile
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o640  # 0o666 & ~0o027, not mkstemp's 0o600


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert target.read_text() == "old" and sorted(os.listdir(tmp_path)) == ["r.json"]
