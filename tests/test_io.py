"""medsegloss._io, the package's one atomic writer: plain-file permissions under any umask, the
old file kept and no temp file left when a write fails, and the content written as given."""

from __future__ import annotations

import os
import stat

import pytest

from medsegloss import _io


@pytest.fixture(params=[0o022, 0o077, 0o002])
def umask(request):
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


def mode_of(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def plain_mode(folder) -> int:
    """The mode ``open(path, "w")`` gives a new file under the current umask."""
    reference = folder / "plain.txt"
    with open(reference, "w") as file:
        file.write("x")
    mode = mode_of(reference)
    reference.unlink()
    return mode


WRITERS = {
    "write_text": lambda path: _io.write_text(path, "text\n"),
    "write_bytes": lambda path: _io.write_bytes(path, b"\x89PNG"),
    "write_json": lambda path: _io.write_json(path, {"a": 1}),
    "append_jsonl": lambda path: _io.append_jsonl(path, {"a": 1}),
    "save_torch": lambda path: _io.save_torch(path, {"weights": [1, 2]}),
    "save_atomic": lambda path: _io.save_atomic(path, lambda temp: temp.write_text("by name")),
}


@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_written_files_get_the_permissions_of_a_plainly_created_file(tmp_path, umask, writer):
    expected = plain_mode(tmp_path)
    assert expected == 0o666 & ~umask
    path = WRITERS[writer](tmp_path / "sub" / "file.out")  # the folder is created too
    assert mode_of(path) == expected
    # replacing an existing file gives the same mode again (not the old file's nor mkstemp's 0600)
    os.chmod(path, 0o600)
    assert mode_of(WRITERS[writer](path)) == expected


def test_current_umask_reads_the_umask_without_changing_it(umask):
    assert _io.current_umask() == umask
    assert _io.current_umask() == umask


class Interrupted(Exception):
    pass


def test_a_write_failing_midway_keeps_the_old_file_and_leaves_no_temp_file(tmp_path):
    path = tmp_path / "results.json"
    _io.write_json(path, {"old": True})
    before = path.read_bytes()
    with pytest.raises(Interrupted):
        with _io.open_atomic(path) as file:
            file.write(b'{"new": ')
            raise Interrupted  # e.g. Ctrl-C halfway through the content
    with pytest.raises(Interrupted):
        _io.save_atomic(path, lambda temp: (temp.write_text("half"), (_ for _ in ()).throw(Interrupted())))
    with pytest.raises(TypeError):
        _io.write_json(path, {"not json": object()})  # fails while serializing, before any file
    with pytest.raises(Exception):
        _io.save_torch(path, lambda: None)  # a lambda cannot be pickled: fails inside torch.save
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_content_round_trips_and_text_keeps_its_line_endings(tmp_path):
    _io.write_text(tmp_path / "a.csv", "x,y\r\n1,2\n")
    assert (tmp_path / "a.csv").read_bytes() == b"x,y\r\n1,2\n"
    with _io.open_atomic(tmp_path / "b.txt", "w") as file:
        file.write("é\r\n")
    assert (tmp_path / "b.txt").read_bytes() == "é\r\n".encode()
    _io.write_json(tmp_path / "c.json", {"nan": float("nan"), "list": [1, 2]}, indent=1)
    assert (tmp_path / "c.json").read_text() == '{\n "nan": NaN,\n "list": [\n  1,\n  2\n ]\n}\n'
    with pytest.raises(ValueError):
        _io.write_json(tmp_path / "d.json", {"nan": float("nan")}, allow_nan=False)
    assert not (tmp_path / "d.json").exists()
    assert _io.read_jsonl(tmp_path / "missing.jsonl") == []
    for epoch in (1, 2):
        _io.append_jsonl(tmp_path / "log.jsonl", {"epoch": epoch})
    assert _io.read_jsonl(tmp_path / "log.jsonl") == [{"epoch": 1}, {"epoch": 2}]


def test_save_atomic_hands_the_saver_a_name_with_the_targets_suffixes(tmp_path):
    seen = []
    _io.save_atomic(tmp_path / "mask.nii.gz", lambda temp: (seen.append(temp), temp.write_bytes(b"x")))
    assert seen[0].name.startswith(".mask.nii.gz.") and seen[0].name.endswith(".tmp.nii.gz")
    assert seen[0].parent == tmp_path
    assert (tmp_path / "mask.nii.gz").read_bytes() == b"x"


def test_open_atomic_refuses_other_modes(tmp_path):
    with pytest.raises(ValueError, match="mode"):
        with _io.open_atomic(tmp_path / "x", "a"):
            pass
