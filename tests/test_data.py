"""What data.py must tell a newcomer: where the corpus comes from when it is missing (in a fresh clone
there is no data/ folder yet), which setting named a path that holds no file, and that the files it
writes (the downloaded corpus, the token cache) are ordinary files, not private ones."""

import os
import stat
import urllib.request
from pathlib import Path

import pytest

import data
import tokenizer
from machinery.files import write_atomically


@pytest.fixture
def umask_022():
    """Run with the common umask 022, so a file created normally has mode 0644."""
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_offline_download_error_says_how_to_make_the_missing_data_folder(tmp_path, monkeypatch):
    destination = tmp_path / "fresh-clone" / "data" / "tinyshakespeare.txt"  # data/ does not exist yet

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(data.DataError) as error:
        data.download_tiny_shakespeare(destination)
    message = str(error.value)
    assert f"copy it to {destination}" in message
    assert f"mkdir -p {destination.parent}" in message
    assert not destination.parent.exists()  # nothing half-made


def test_a_bad_data_path_names_the_setting_it_came_from(tmp_path, monkeypatch):
    missing = tmp_path / "missing.txt"
    with pytest.raises(data.DataError, match="--data"):
        data.find_corpus(str(missing))
    monkeypatch.setenv(data.DATA_ENV_VAR, str(missing))
    with pytest.raises(data.DataError) as error:
        data.find_corpus()
    assert f"no text file at {missing}" in str(error.value)
    assert f"${data.DATA_ENV_VAR}" in str(error.value) and "--data" not in str(error.value)


def test_written_files_get_the_usual_permissions_not_private_ones(tmp_path, umask_022):
    corpus = tmp_path / "data" / "corpus.txt"
    write_atomically(corpus, b"hello")
    assert corpus.read_bytes() == b"hello"
    assert mode(corpus) == 0o644

    text = "to be or not to be"
    chars = tokenizer.CharTokenizer.from_text(text)
    cache_dir = tmp_path / "cache"
    data.encode_cached(text, chars, cache_dir)
    (cache_file,) = cache_dir.iterdir()
    assert mode(cache_file) == 0o644
    assert data.encode_cached(text, chars, cache_dir).tolist() == chars.encode(text)  # read back from the file
    assert not [p for p in tmp_path.rglob(".*.tmp")]  # no temp file left behind
