"""
A run's corpus is part of its identity: every checkpoint records the text it was trained on (its resolved
path, sha256 and size: data.corpus_record), and --resume trains on that file again, whatever --data,
$TINYGPT_DATA or the working folder say now. A corpus that changed since the save, or another --data, is
refused (another text makes another run, one no uninterrupted run could match) unless --corpus-changed-ok
asks to continue anyway. generate.py, export.py and inspect_model.py read no corpus: the checkpoint's own
tokenizer is all they need.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import data

FLAG = "--corpus-changed-ok"


def corpus_to_resume(saved: dict, data_given: str | None, changed_ok: bool) -> tuple[str | None, str | None]:
    """The corpus path a resumed run trains on (None: the default corpus, for a run saved before corpora
    were recorded), and a line saying what was not as saved (None if all is). saved: the checkpoint;
    data_given: --data on this command line. Raises data.DataError for a corpus that is not the saved one."""
    record = saved.get("corpus")
    if record is None:  # saved before checkpoints recorded their corpus: its --data is all there is
        path = data_given or saved["args"].get("data")
        saved_path = saved["args"].get("data")
        if data_given and saved_path != data_given and not same_file(data_given, saved_path) and not changed_ok:
            raise data.DataError(f"--data {data_given} is not the saved run's --data ({saved_path or 'the default'}); "
                                 f"drop --data to continue the run, or pass {FLAG} to continue on {data_given}")
        return path, (f"{path or 'the default corpus'} unchecked (the checkpoint was saved before runs recorded "
                      "their corpus)")
    if data_given and not same_file(data_given, record["path"]):
        if not changed_ok:
            raise data.DataError(f"--data {data_given} is not the corpus the saved run trained on ({record['path']}); "
                                 f"drop --data to continue the run on its own corpus, or pass {FLAG} to continue "
                                 f"on {data_given}")
        return data_given, f"--data {data_given} ({FLAG}; the run trained on {record['path']})"
    path = Path(record["path"])
    if not path.is_file():
        raise data.DataError(f"the run's corpus {path} is gone; put it back, or pass --data PATH {FLAG} to "
                             "continue on another copy")
    raw = path.read_bytes()
    digest = hashlib.sha256(raw).hexdigest()
    if digest == record["sha256"]:
        return str(path), None
    change = (f"{path} changed since the run was saved ({record['bytes']:,} bytes, sha256 {record['sha256'][:12]} "
              f"then; {len(raw):,} bytes, sha256 {digest[:12]} now)")
    if not changed_ok:
        raise data.DataError(f"{change}; put the original back, or pass {FLAG} to continue on the text as it is now")
    return str(path), f"{change}, as {FLAG} asks"


def same_file(given: str, recorded: str | None) -> bool:
    """Whether the path given names the recorded file (relative paths resolve from the working folder)."""
    return recorded is not None and Path(given).resolve() == Path(recorded).resolve()
