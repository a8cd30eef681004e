"""tinydet.io.jsonfile.read_json: every failure is one TinydetError line naming the file and what it is."""
import pytest

from tinydet.errors import TinydetError
from tinydet.io.jsonfile import read_json


def test_reads_and_names_each_failure(tmp_path):
    good = tmp_path / "a.json"
    good.write_text('{"x": [1, 2]}')
    assert read_json(good) == {"x": [1, 2]}
    with pytest.raises(TinydetError, match=r"missing.json: target description does not exist$"):
        read_json(tmp_path / "missing.json", "target description")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "x": [1,\n')
    with pytest.raises(TinydetError, match=r"bad.json:3: not valid JSON \(.*\) in net config; edit it$"):
        read_json(bad, "net config", hint="edit it")
    latin = tmp_path / "latin.json"
    latin.write_bytes(b'{"name": "caf\xe9"}')
    with pytest.raises(TinydetError, match=r"latin.json: latency table is not UTF-8 text \(byte 13\)"):
        read_json(latin, "latency table")
    with pytest.raises(TinydetError, match=r"cannot read folder"):
        read_json(tmp_path, "folder")
