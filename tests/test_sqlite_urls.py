"""SQLite store URLs and paths: nothing opens a file other than the one named."""

from __future__ import annotations

import os

import pytest

from journal.errors import InvalidArgument, StoreError
from journal.store import open_store


@pytest.mark.parametrize("suffix", ["#frag", "#", "?y.db", "?synchronous=normal&y", "?sync=full"])
def test_fragments_and_unknown_options_are_refused(tmp_path, suffix):
    url = f"sqlite:///{tmp_path / 'x.db'}{suffix}"
    with pytest.raises(InvalidArgument) as caught:
        open_store(url)
    if "?" in suffix:
        assert "synchronous" in str(caught.value)  # the accepted ones are named
    assert os.listdir(tmp_path) == []


def test_a_known_option_still_works(tmp_path):
    open_store(f"sqlite:///{tmp_path / 'x.db'}?synchronous=normal").close()
    assert sorted(os.listdir(tmp_path)) == ["x.db", "x.db.lock"]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_directory_is_not_a_journal_file(tmp_path, readonly):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(StoreError, match="directory"):
        open_store(f"sqlite:///{tmp_path / 'dir.db'}", readonly=readonly)
    assert os.listdir(tmp_path) == ["dir.db"]


@pytest.mark.parametrize("readonly", [False, True])
def test_a_missing_parent_directory_is_said_so(tmp_path, readonly):
    with pytest.raises(StoreError, match="directory"):
        open_store(f"sqlite:///{tmp_path / 'nowhere' / 'x.db'}", readonly=readonly)
    assert os.listdir(tmp_path) == []


def test_a_read_only_open_of_a_missing_file_is_a_clear_store_error(tmp_path):
    with pytest.raises(StoreError, match="no such journal file"):
        open_store(f"sqlite:///{tmp_path / 'missing.db'}", readonly=True)
    assert os.listdir(tmp_path) == []
