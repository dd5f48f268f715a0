"""The lock token vouches for the layers file we wrote, so our next save re-uses its bytes
without checking them; anything else (Go's writes, hand edits) is checked as before.

The note sits where the token's random bytes are (Go only compares tokens): "lsv1", the
file's size and its CRC-32.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

from layerstore import LayerStore
from layerstore.layer import decode_layers, encode_record

if TYPE_CHECKING:
    from conftest import Runner

LAYERS = Path("vfs-layers/layers.json")
LOCK = Path("vfs-layers/layers.lock")


def go_encoding(data: bytes) -> bytes:
    """What Go writes for these records (every record encoded from scratch)."""
    objs, _ = decode_layers(data, "layers.json")
    return ("[" + ",".join(encode_record(o) for o in objs) + "]").encode()


def test_our_token_vouches_for_the_file_we_wrote(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    with LayerStore(g, r) as store:
        store.create(names=["a"])
        store.create(names=["b"])
    data = (g / LAYERS).read_bytes()
    token = (g / LOCK).read_bytes()
    assert token[20:24] == b"lsv1"
    assert int.from_bytes(token[24:32], "little") == len(data)
    assert int.from_bytes(token[32:36], "little") == zlib.crc32(data)
    assert data == go_encoding(data)
    # the next save starts from the very same bytes
    with LayerStore(g, r) as store:
        store.create(names=["c"])
    after = (g / LAYERS).read_bytes()
    assert after.startswith(data[:-1] + b",")
    assert after == go_encoding(after)


def test_a_hand_edited_file_is_not_taken_on_trust(tmp_path: Path) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    with LayerStore(g, r) as store:
        store.create(names=["a"])
        store.create(names=["b"], id="b" * 64)
    # same token, new content: pretty-printed, and a created time Go would shorten
    records = json.loads((g / LAYERS).read_bytes())
    records[1]["created"] = "2026-01-02T03:04:05.500000000Z"
    (g / LAYERS).write_text(json.dumps(records, indent=1))
    with LayerStore(g, r) as store:
        assert store.get("b").created_ns % 10**9 == 500_000_000
        store.create(names=["c"])
    after = (g / LAYERS).read_bytes()
    assert after == go_encoding(after)
    assert b'"created":"2026-01-02T03:04:05.5Z"' in after
    assert [rec.get("names") for rec in json.loads(after)] == [["a"], ["b"], ["c"]]


def test_a_file_go_wrote_is_checked_and_extended(tmp_path: Path, go_cli: Runner) -> None:
    g, r = tmp_path / "G", tmp_path / "R"
    for name in ("a", "b"):
        go_cli(g, r, "create-layer", "-n", name)
    assert (g / LOCK).read_bytes()[20:24] != b"lsv1"
    go_data = (g / LAYERS).read_bytes()
    with LayerStore(g, r) as store:
        store.create(names=["c"])
    after = (g / LAYERS).read_bytes()
    assert after.startswith(go_data[:-1] + b",")
    assert after == go_encoding(after)
    assert "\tname: c" in go_cli(g, r, "layers").stdout
