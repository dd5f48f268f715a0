"""Layer records and their layers.json codec (SPEC.md §2).

Three things live here:

* :class:`Layer`, the immutable snapshot handed to users;
* :class:`LayerRecord`, the store's mutable record. It is backed by the decoded JSON
  object itself, so keys this version does not know survive our save;
* the codec: :func:`decode_layers` / :func:`encode_layers` and :func:`encode_record`,
  which produce exactly the bytes Go's encoder writes (struct key order, omitempty,
  RFC3339Nano, compact, ``<>&`` and U+2028/U+2029 escaped, sorted map keys, invalid
  UTF-8 as ``\\ufffd``).

Speed: loading keeps per-record Python work to a few dictionary operations. A record
read from disk keeps its source text; saving re-uses that text once a cheap check shows
it is already what Go would write, so a 10,000-layer file is neither re-parsed nor
re-encoded field by field.
"""

from __future__ import annotations

import time

from layerstore.errors import CorruptStore
from layerstore.idtools import IDMap
from layerstore.lazy_re import lazy_re

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    import re
    from collections.abc import Callable, Iterable, Mapping
    from datetime import datetime
    from typing import Any, Final

    from layerstore.snapshot import Layer

# Import cost: a CLI call that only lists layers needs none of json, re, datetime, enum
# or the Layer class; each is imported where it is first needed (json's C scanner is
# used directly for loading, see _json_loads).

__all__ = [
    "GO_KEY_ORDER",
    "IDMap",
    "Layer",
    "LayerRecord",
    "decode_layers",
    "encode_layers",
    "encode_record",
    "format_created",
    "parse_created",
]

# ---------------------------------------------------------------------------------------
# the record layout

GO_KEY_ORDER: Final = (
    "id",
    "names",
    "parent",
    "metadata",
    "mountlabel",
    "created",
    "compressed-diff-digest",
    "compressed-size",
    "diff-digest",
    "toc-digest",
    "diff-size",
    "compression",
    "uidset",
    "gidset",
    "flags",
    "uidmap",
    "gidmap",
    "big-data-names",
)
_KEY_RANK: Final = {k: i for i, k in enumerate(GO_KEY_ORDER)}
_STR_KEYS: Final = frozenset(
    (
        "id",
        "parent",
        "metadata",
        "mountlabel",
        "created",
        "compressed-diff-digest",
        "diff-digest",
        "toc-digest",
    )
)
_INT_KEYS: Final = frozenset(("compressed-size", "diff-size", "compression"))
_UINT_LIST_KEYS: Final = frozenset(("uidset", "gidset"))
_STR_LIST_KEYS: Final = frozenset(("names", "big-data-names"))
_MAP_KEYS: Final = frozenset(("uidmap", "gidmap"))
_EXPECTED_TYPE: Final[dict[str, type]] = {
    **dict.fromkeys(_STR_KEYS, str),
    **dict.fromkeys(_INT_KEYS, int),
    **dict.fromkeys(_UINT_LIST_KEYS | _STR_LIST_KEYS | _MAP_KEYS, list),
    "flags": dict,
}
INCOMPLETE_FLAG: Final = "incomplete"

# ---------------------------------------------------------------------------------------
# time: Go's RFC3339Nano

# Regular expressions are compiled on first use (``lazy_re``).


_created_re: Final = lazy_re(
    r"(\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?([Zz]|[+-]\d{2}:\d{2})\Z"
)
_canonical_created_re: Final = lazy_re(
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{0,8}[1-9])?(?:Z|[+-]\d\d:\d\d)\Z"
)
_EPOCH_ORDINAL: Final = 719163  # datetime(1970, 1, 1).toordinal()
ZERO_CREATED: Final = "0001-01-01T00:00:00Z"


def parse_created(text: str) -> tuple[int, datetime]:
    """``(unix nanoseconds, aware datetime in UTC)`` of an RFC 3339 time; ValueError."""
    from datetime import UTC, datetime, timedelta

    # Fast path: what Go writes, ``YYYY-MM-DDTHH:MM:SS[.frac]Z``.
    if len(text) >= 20 and text[-1] == "Z" and text[10] == "T" and text[19] in ".Z":
        frac = text[20:-1]
        if frac.isdigit() or not frac:
            try:
                dt = datetime.fromisoformat(text)  # keeps microseconds, tz UTC
            except ValueError:
                dt = None
            if dt is not None:
                ns = int((frac + "000000000")[:9]) if frac else 0
                days = dt.toordinal() - _EPOCH_ORDINAL
                secs = days * 86400 + dt.hour * 3600 + dt.minute * 60 + dt.second
                return secs * 1_000_000_000 + ns, dt
    m = _created_re().match(text)
    if m is None:
        raise ValueError(f"parsing time {text!r} as RFC3339")
    y, mo, d, h, mi, s = (int(g) for g in m.groups()[:6])
    frac = m.group(7) or ""
    ns = int((frac + "000000000")[:9])
    off = m.group(8)
    offset_s = 0
    if off not in ("Z", "z"):
        sign = -1 if off[0] == "-" else 1
        offset_s = sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60)
    try:
        days = datetime(y, mo, d).toordinal() - _EPOCH_ORDINAL
    except ValueError as e:
        raise ValueError(f"parsing time {text!r}: {e}") from None
    if h > 23 or mi > 59 or s > 59:
        raise ValueError(f"parsing time {text!r}: hour, minute or second out of range")
    secs = days * 86400 + h * 3600 + mi * 60 + s - offset_s
    total_ns = secs * 1_000_000_000 + ns
    try:
        dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=total_ns // 1000)
    except OverflowError:
        dt = datetime.min.replace(tzinfo=UTC) if total_ns < 0 else datetime.max.replace(tzinfo=UTC)
    return total_ns, dt


def format_created(unix_ns: int, offset_s: int = 0) -> str:
    """Go's ``time.Time.Format(RFC3339Nano)``: trailing zeros of the fraction dropped."""
    from datetime import datetime, timedelta

    secs, ns = divmod(unix_ns, 1_000_000_000)
    local = datetime(1970, 1, 1) + timedelta(seconds=secs + offset_s)
    text = local.strftime("%Y-%m-%dT%H:%M:%S")
    if len(text) < 19:  # years below 1000 on some libcs
        text = f"{local.year:04d}" + text[text.index("-") :]
    if ns:
        text += "." + f"{ns:09d}".rstrip("0")
    if offset_s == 0:
        return text + "Z"
    sign = "-" if offset_s < 0 else "+"
    o = abs(offset_s) // 60
    return f"{text}{sign}{o // 60:02d}:{o % 60:02d}"


def _plainly_canonical_created(text: str) -> bool:
    """A quick yes for the common ``YYYY-MM-DDTHH:MM:SS[.frac]Z`` (ASCII digits, no
    trailing zero in the fraction) that :func:`_canonical_created_re` matches; False
    means "ask the regular expression" (which is not imported for the quick cases)."""
    if len(text) < 20 or text[-1] != "Z" or not text.isascii():
        return False
    head = text[:19]
    if head[4] + head[7] + head[10] + head[13] + head[16] != "--T::":
        return False
    digits = head[:4] + head[5:7] + head[8:10] + head[11:13] + head[14:16] + head[17:19]
    if not digits.isdigit():
        return False
    frac = text[19:-1]
    if not frac:
        return True
    return 2 <= len(frac) <= 10 and frac[0] == "." and frac[1:].isdigit() and frac[-1] != "0"


def _canonical_created(text: str) -> str:
    """The text Go writes back for a ``created`` value it read; ValueError if invalid."""
    if _plainly_canonical_created(text) or _canonical_created_re().match(text):
        return text
    unix_ns, _ = parse_created(text)
    m = _created_re().match(text)
    assert m is not None
    off = m.group(8)
    offset_s = 0
    if off not in ("Z", "z"):
        sign = -1 if off[0] == "-" else 1
        offset_s = sign * (int(off[1:3]) * 3600 + int(off[4:6]) * 60)
    return format_created(unix_ns, offset_s)


def now_created() -> tuple[str, int]:
    """``(text, unix ns)`` for "now", as Go's ``time.Now().UTC()`` is written."""
    ns = time.time_ns()
    return format_created(ns), ns


# ---------------------------------------------------------------------------------------
# encoding: Go's encoding/json (json-iterator, standard-library compatible)

_bf_re: Final = lazy_re(r"(\\\\)|\\([bf])")
_surrogate_re: Final = lazy_re("[\ud800-\udfff]")


def _bf_sub(m: re.Match[str]) -> str:
    if m.group(1):
        return m.group(1)
    return "\\u0008" if m.group(2) == "b" else "\\u000c"


def go_escape(text: str) -> str:
    """Turn ``json.dumps(ensure_ascii=False)`` output into what Go writes."""
    if "<" in text:
        text = text.replace("<", "\\u003c")
    if ">" in text:
        text = text.replace(">", "\\u003e")
    if "&" in text:
        text = text.replace("&", "\\u0026")
    if "\u2028" in text:
        text = text.replace("\u2028", "\\u2028")
    if "\u2029" in text:
        text = text.replace("\u2029", "\\u2029")
    if "\\b" in text or "\\f" in text:
        text = _bf_re().sub(_bf_sub, text)
    return text


def go_dumps(value: Any) -> str:
    """Compact Go-style JSON text of a plain JSON value (dict key order kept)."""
    return go_escape(_json_dumps(value))


def _not_serializable(o: object) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _json_dumps(value: Any) -> str:
    """``json.dumps(value, ensure_ascii=False, separators=(",", ":"))`` without importing
    json (and with it re, enum, ...): the C encoder json.dumps itself uses, called
    directly. On any failure json.dumps runs instead, so errors are its own."""
    try:
        import _json

        encode = _json.make_encoder(
            {}, _not_serializable, _json.encode_basestring, None, ":", ",", False, False, True
        )
        return "".join(encode(value, 0))
    except Exception:
        import json

        return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def to_utf8(text: str) -> bytes:
    """UTF-8 bytes; lone surrogates (invalid UTF-8 that came in through surrogateescape
    or ``\\udXXX`` escapes) become ``\\ufffd``, as Go writes invalid UTF-8."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return _surrogate_re().sub(lambda _m: "\\ufffd", text).encode("utf-8")


def _go_float(x: float) -> int | float:
    """A float64 as Go writes it, as far as json.dumps can express it: integral values
    below 1e21 come out as integers (Go prints ``1e+06`` as ``1000000``)."""
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("NaN and infinities are not valid JSON")
    if x == int(x) and abs(x) < 1e21:
        from decimal import Decimal  # rare: only flags holding big numbers

        return int(Decimal(repr(x)))
    return x


def _go_generic(value: Any, where: str) -> Any:
    """Normalise a generic JSON value the way Go's ``interface{}`` round trip does:
    numbers become float64, object keys are sorted."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if abs(value) < (1 << 53) else _go_float(float(value))
    if isinstance(value, float):
        return _go_float(value)
    if isinstance(value, list | tuple):
        return [_go_generic(v, where) for v in value]
    if is_mapping(value):
        out = {}
        for k in sorted(value):
            if not isinstance(k, str):
                raise TypeError(f"{where}: object key {k!r} is not a string")
            out[k] = _go_generic(value[k], where)
        return out
    raise TypeError(f"{where}: {type(value).__name__} is not a JSON value")


def is_mapping(value: object) -> bool:
    """``isinstance(value, collections.abc.Mapping)``; collections.abc (which imports
    the whole collections package) only for a value that is not a dict."""
    if isinstance(value, dict):
        return True
    from collections.abc import Mapping

    return isinstance(value, Mapping)


def _type_ok(value: object, want: type) -> bool:
    return type(value) is want or (want is list and type(value) is tuple)


def normalize_record(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A new dict holding what Go would write for this record: keys in struct order,
    omitempty applied, values normalised; unknown keys kept after the known ones.
    Raises ValueError/TypeError describing the first bad field."""
    out: dict[str, Any] = {}
    for key in GO_KEY_ORDER:
        v: Any = obj.get(key)
        if v is None:
            if key == "id":
                out[key] = ""
            elif key == "created":
                out[key] = ZERO_CREATED
            continue
        want = _EXPECTED_TYPE[key]
        if not _type_ok(v, want):
            raise TypeError(f"field {key!r}: {type(v).__name__} where {want.__name__} expected")
        if key == "id":
            out[key] = v
        elif key == "created":
            out[key] = _canonical_created(v)
        elif key in _STR_KEYS or key in _INT_KEYS:
            if v:
                out[key] = v
        elif key in _STR_LIST_KEYS:
            for item in v:
                if type(item) is not str:
                    raise TypeError(f"field {key!r}: {item!r} is not a string")
            if v:
                out[key] = list(v)
        elif key in _UINT_LIST_KEYS:
            for item in v:
                if type(item) is not int or not 0 <= item < (1 << 32):
                    raise TypeError(f"field {key!r}: {item!r} is not a uint32")
            if v:
                out[key] = list(v)
        elif key in _MAP_KEYS:
            maps = [IDMap.from_json(m).to_json() for m in v]
            if maps:
                out[key] = maps
        elif key == "flags" and v:
            out[key] = _go_generic(v, "field 'flags'")
    for key, v in obj.items():
        if key not in _KEY_RANK:
            out[key] = v
    return out


def encode_record(obj: Mapping[str, Any]) -> str:
    """Go's JSON text of one record (normalising it first)."""
    return go_dumps(normalize_record(obj))


# ---------------------------------------------------------------------------------------
# the store's mutable record

# Memo of record signatures (key tuple, value types): True when the keys are a
# Go-ordered subset of the struct's keys (unknown keys only after the known ones) that
# includes id and created, each with the JSON type Go decodes into.
_signature_ok: dict[tuple[tuple[str, ...], tuple[type, ...]], bool] = {}


def _check_signature(keys: tuple[str, ...], types: tuple[type, ...]) -> bool:
    last = -1
    unknown_seen = False
    for k, t in zip(keys, types, strict=True):
        rank = _KEY_RANK.get(k)
        if rank is None:
            unknown_seen = True
            continue
        if unknown_seen or rank <= last or t is not _EXPECTED_TYPE[k]:
            return False
        last = rank
    return "id" in keys and "created" in keys


# A whole layers file exactly as Go's encoder writes it, for records holding only the
# plain keys (no flags, ID maps or unknown keys): struct key order, omitempty, Go's string
# escapes, canonical ``created``. Deliberately stricter than Go's rules (e.g. no escapes
# of other characters, uid/gid values below 1e9): a file it rejects goes through the
# per-record check instead. Possessive quantifiers keep the match linear (~7 ns/char).
# Raw U+2028/U+2029 (which Go escapes) are looked for separately: an ASCII-only class
# keeps compiling the pattern cheap, and the record pattern appears once.
_JC = r'[^"\\\x00-\x1f<>&]'
_JE = r"\\(?:[\"\\nrt]|u00(?:0[0-8bcef]|1[0-9a-f]|3c|3e|26)|u202[89])"
_JS = r'"(?:' + _JC + "|" + _JE + ")" + _JC + "*+(?:" + _JE + _JC + '*+)*+"'
_JI = "-?[1-9][0-9]{0,17}+"
_JU = "(?:0|[1-9][0-9]{0,8}+)"
_JUL = r"\[" + _JU + "(?:," + _JU + r")*+\]"


_JCREATED = r'"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{0,8}[1-9])?(?:Z|[+-]\d\d:\d\d)"'
# The keys a plain record may have, in Go's order: id and created always, the others
# only when not empty (no flags, ID maps or unknown keys: those go the slow way).
_PLAIN_KEYS: Final = tuple(k for k in GO_KEY_ORDER if k not in ("flags", "uidmap", "gidmap"))


def _value_pattern(key: str, js: str) -> str:
    if key in _STR_LIST_KEYS:
        return r"\[" + js + "(?:," + js + r")*+\]"
    if key == "created":
        return _JCREATED
    if key in _INT_KEYS:
        return _JI
    if key in _UINT_LIST_KEYS:
        return _JUL
    return js


def _file_pattern(js: str) -> str:
    """The pattern of a whole file of plain records, strings matched by ``js``."""
    record = r'\{"id":' + js
    for key in _PLAIN_KEYS[1:]:
        part = ',"' + key + '":' + _value_pattern(key, js)
        record += part if key == "created" else "(?:" + part + ")?"
    record += r"\}"
    return r"(?a)\[(?:" + record + r"(?:,|\]\Z))++"


_canonical_file_re: Final = lazy_re(_file_pattern(_JS))
# For a text without ``\``, ``<``, ``>`` or ``&`` (the decoder has already refused raw
# control characters in strings), _JS matches exactly what ``"[^"]++"`` does, which the
# regular expression engine scans several times faster.
_PLAIN_STRING_CHARS: Final = ("\\", "<", ">", "&")
_plain_file_re: Final = lazy_re(_file_pattern(r'"[^"]++"'))


class SourceText:
    """The text of one layers file as read, so unchanged records can be written back
    without re-encoding. Record boundaries are found lazily (at the first save) by the
    separator Go's compact encoder leaves between records, ``},{"id":``, which cannot
    occur inside a JSON string; when the count does not match, nothing is re-used.

    ``data`` is the file's bytes when they are exactly the text in UTF-8 (None when
    invalid UTF-8 was replaced): written back as they are, nothing is copied or encoded.

    :meth:`canonical` tells whether every record's text is what Go would write, so no
    record needs the per-record check: at once when the file is the one the last writer
    vouched for (:func:`vouch`, ``note``), else by checking the whole text (one regular
    expression, in C, about 5 ns a character). ``records`` are the records made from it,
    in order, and ``detached`` counts those changed since: while it is 0 and they are
    saved in the same order, the text itself is written back (:func:`encode_layers`)."""

    __slots__ = (
        "_canonical",
        "_spans",
        "count",
        "data",
        "detached",
        "note",
        "records",
        "text",
    )

    def __init__(
        self,
        text: str,
        count: int,
        data: bytes | None = None,
        note: bytes = b"",
    ) -> None:
        self.text = text
        self.count = count
        self.data = data
        self.note = note
        self.records: list[LayerRecord] = []
        self.detached = 0
        self._spans: list[tuple[int, int]] | None = None
        self._canonical: bool | None = None

    def canonical(self) -> bool:
        ok = self._canonical
        if ok is None:
            if self.data is not None and vouched(self.note, self.data):
                ok = self._canonical = True
                return ok
            text = self.text
            if not text.endswith("]") or "\u2028" in text or "\u2029" in text:
                ok = self._canonical = False
                return ok
            plain = not any(c in text for c in _PLAIN_STRING_CHARS)
            pattern = _plain_file_re() if plain else _canonical_file_re()
            ok = self._canonical = pattern.fullmatch(text) is not None
        return ok

    def record_text(self, index: int) -> str | None:
        spans = self._spans
        if spans is None:
            spans = self._spans = self._split()
        if not spans:
            return None
        start, end = spans[index]
        return self.text[start:end]

    def _split(self) -> list[tuple[int, int]]:
        text = self.text
        if not (text.startswith('[{"id":') and text.endswith("}]")):
            return []
        spans = []
        start = 1
        find = text.find
        end_of_array = len(text) - 1
        while True:
            j = find('},{"id":', start)
            if j < 0:
                spans.append((start, end_of_array))
                break
            spans.append((start, j + 1))
            start = j + 2
        return spans if len(spans) == self.count else []


class LayerRecord:
    """One layer as the store keeps it: the JSON object plus mount state.

    ``obj`` is the decoded object (unknown keys included). A record read from disk
    remembers where its text is (``source``, ``index``); :meth:`text_for_save` re-uses
    that text once a cheap check shows it is what Go would write.
    """

    __slots__ = (
        "_created",
        "_snapshot",
        "index",
        "location",
        "mount_count",
        "mount_point",
        "obj",
        "source",
        "text",
    )

    def __init__(
        self,
        obj: dict[str, Any],
        location: int,
        source: SourceText | None = None,
        index: int = -1,
    ) -> None:
        self.obj = obj
        self.location = location
        self.source = source
        self.index = index
        if source is not None:
            source.records.append(self)
        self.text: str | None = None
        self.mount_point = ""
        self.mount_count = 0
        self._snapshot: Layer | None = None
        self._created: tuple[int, datetime] | None = None

    # -- plain accessors (hot paths read obj directly) ----------------------------------

    @property
    def id(self) -> str:
        return str(self.obj["id"])

    @property
    def names(self) -> list[str]:
        names = self.obj.get("names")
        return list(names) if names else []

    @property
    def flags(self) -> dict[str, Any]:
        flags = self.obj.get("flags")
        return dict(flags) if isinstance(flags, dict) else {}

    @property
    def incomplete(self) -> bool:
        flags = self.obj.get("flags")
        return isinstance(flags, dict) and flags.get(INCOMPLETE_FLAG) is True

    @property
    def big_data_names(self) -> list[str]:
        names = self.obj.get("big-data-names")
        return list(names) if names else []

    def created(self, source: str = "") -> tuple[int, datetime]:
        """``(unix ns, datetime)`` of ``created``; CorruptStore naming ``source``."""
        created = self._created
        if created is None:
            text = self.obj.get("created") or ZERO_CREATED
            try:
                if type(text) is not str:
                    raise TypeError(f"field 'created' is a {type(text).__name__}")
                created = self._created = parse_created(text)
            except (ValueError, TypeError) as e:
                raise CorruptStore(f"{source or 'layers'}: layer {self.id!r}: {e}") from None
        return created

    def created_ns(self, source: str = "") -> int:
        return self.created(source)[0]

    # -- mutation -----------------------------------------------------------------------

    def replace(self, obj: Mapping[str, Any]) -> None:
        """Replace the object by its normalised form and forget cached encodings.

        CorruptStore when a field (one read from disk) has a value Go would reject."""
        try:
            normalized = normalize_record(obj)
        except (TypeError, ValueError) as e:
            raise CorruptStore(f"layer {obj.get('id')!r}: {e}") from None
        self.obj = normalized
        if self.source is not None:
            self.source.detached += 1
            self.source = None
        self.text = None
        self._snapshot = None
        self._created = None

    def mounts_changed(self) -> None:
        self._snapshot = None

    # -- encoding -----------------------------------------------------------------------

    def text_for_save(self, source: str) -> str:
        """Go's JSON text of the record; a CorruptStore naming ``source`` if invalid."""
        text = self.text
        if text is not None:
            return text
        obj = self.obj
        if self.source is not None:
            src = self.source
            text = src.record_text(self.index)
            if text is not None and src.canonical():
                self.text = text  # the file is what Go writes: nothing to check
                return text
            src.detached += 1
            self.source = None
            if (
                text is not None
                and text.startswith(f'{{"id":"{obj["id"]}"')
                and self._looks_canonical(obj)
            ):
                self.text = text
                return text
        try:
            normalized = normalize_record(obj)
        except (TypeError, ValueError) as e:
            raise CorruptStore(f"{source}: layer {obj.get('id')!r}: {e}") from None
        self.obj = normalized
        self.text = go_dumps(normalized)
        return self.text

    @staticmethod
    def _looks_canonical(obj: dict[str, Any]) -> bool:
        """Whether the text Go wrote for ``obj`` is what we would write: keys in struct
        order with the value types Go accepts (memoised per signature), nothing
        omitempty would drop, no flags map to normalise, ``created`` as Go formats
        it. List items are checked when
        a snapshot is built."""
        sig = (tuple(obj), tuple(map(type, obj.values())))
        ok = _signature_ok.get(sig)
        if ok is None:
            ok = _signature_ok[sig] = _check_signature(*sig)
        return (
            ok
            and (all(obj.values()) or obj["id"] == "")
            and "flags" not in obj
            and (
                _plainly_canonical_created(obj["created"])
                or _canonical_created_re().match(obj["created"]) is not None
            )
        )

    # -- snapshot -----------------------------------------------------------------------

    def snapshot(self, read_only: bool, source: str = "") -> Layer:
        """The immutable :class:`Layer` for this record (cached until it changes)."""
        snap = self._snapshot
        if snap is not None and snap.read_only == read_only:
            return snap
        from layerstore.snapshot import COMPRESSIONS, EMPTY_FLAGS, freeze, new_layer

        obj = self.obj
        get = obj.get
        created_ns, created = self.created(source)
        try:
            sig = (tuple(obj), tuple(map(type, obj.values())))
            ok = _signature_ok.get(sig)
            if ok is None:
                ok = _signature_ok[sig] = _check_signature(*sig)
            if not ok:
                normalize_record(obj)  # only to validate: raises on a bad field
            flags = get("flags")
            uid_map = get("uidmap")
            gid_map = get("gidmap")
            snap = new_layer(
                obj["id"],
                tuple(get("names") or ()),
                get("parent") or None,
                get("metadata") or "",
                get("mountlabel") or "",
                created,
                created_ns,
                get("compressed-diff-digest") or None,
                int(get("compressed-size") or 0),
                get("diff-digest") or None,
                get("toc-digest") or None,
                int(get("diff-size") or 0),
                COMPRESSIONS[get("compression") or 0],
                tuple(get("uidset") or ()),
                tuple(get("gidset") or ()),
                freeze(flags) if flags else EMPTY_FLAGS,
                tuple(IDMap.from_json(m) for m in uid_map) if uid_map else (),
                tuple(IDMap.from_json(m) for m in gid_map) if gid_map else (),
                tuple(get("big-data-names") or ()),
                self.mount_point or None,
                self.mount_count,
                read_only,
            )
        except (TypeError, ValueError, KeyError, LookupError) as e:
            raise CorruptStore(f"{source or 'layers'}: layer {obj.get('id')!r}: {e}") from None
        self._snapshot = snap
        return snap


# ---------------------------------------------------------------------------------------
# files


class _ScannerContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder()``: the defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}
    parse_constant = parse_constant.__getitem__  # type: ignore[assignment]


def _make_scanner() -> Callable[[str, int], tuple[Any, int]] | None:
    try:
        import _json
    except ImportError:  # not CPython: json.loads it is
        return None
    context: Any = _ScannerContext()
    scanner: Callable[[str, int], tuple[Any, int]] = _json.make_scanner(context)
    return scanner


_scan_once: Final = _make_scanner()
_JSON_SPACE: Final = " \t\n\r"


def _json_loads(data: str | bytes) -> Any:
    """``json.loads(data)``, without importing json (and with it re, enum, ...): the C
    scanner json.loads itself uses, called directly. Anything it does not take as a
    whole (bad JSON, bytes that are not plain UTF-8) goes to json.loads, so results
    and errors are json.loads's own."""
    if _scan_once is not None:
        try:
            text = data if isinstance(data, str) else data.decode("utf-8")
            value, end = _scan_once(text, len(text) - len(text.lstrip(_JSON_SPACE)))
        except (StopIteration, ValueError):
            pass
        else:
            if end == len(text) or not text[end:].strip(_JSON_SPACE):
                return value
    import json

    return json.loads(data)


# ---------------------------------------------------------------------------------------
# vouching: a writer's note in the lock token (lockfile.LockFile.record_write) saying
# which bytes it is about to write, so the next writer re-uses them unchecked

_VOUCH_MAGIC: Final = b"lsv1"


def vouch(data: bytes) -> bytes:
    """The 16-byte note for a layers file this package writes as ``data`` (always
    what Go would write): a magic, the size and the CRC-32 of the bytes."""
    import zlib

    return _VOUCH_MAGIC + len(data).to_bytes(8, "little") + zlib.crc32(data).to_bytes(4, "little")


def vouched(note: bytes, data: bytes) -> bool:
    """Whether ``note`` (from the lock token) vouches for exactly the bytes ``data``: a
    file written by this package and untouched since. A Go token's random bytes, or a
    file changed by hand or by another tool, does not pass."""
    return (
        len(note) == 16
        and note[:4] == _VOUCH_MAGIC
        and int.from_bytes(note[4:12], "little") == len(data)
        and note == vouch(data)
    )


def decode_layers(data: bytes, path: str, note: bytes = b"") -> tuple[list[Any], SourceText | None]:
    """The array of a layers JSON file and its text (for re-use at save). An empty
    file (or ``null``) means no layers. Raises CorruptStore naming ``path``; the caller
    checks that each element is an object. ``note`` is what the lock token says about
    the file (:func:`vouched`)."""
    if not data:
        return [], None
    raw: bytes | None = data  # the text's exact UTF-8 encoding (kept for re-use)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Go replaces invalid UTF-8 with U+FFFD while decoding strings.
        text = data.decode("utf-8", "replace")
        raw = None
    try:
        objs = _json_loads(text)
    except ValueError as e:  # json.JSONDecodeError
        raise CorruptStore(f'loading "{path}": {e}') from None
    if objs is None:
        return [], None
    if type(objs) is not list:
        raise CorruptStore(f'loading "{path}": expected a JSON array of layers')
    return objs, SourceText(text, len(objs), raw, note)


def encode_layers(records: Iterable[LayerRecord], path: str) -> bytes:
    """The bytes of a layers JSON file holding ``records`` in order (Go's encoding).

    When they start with every record of the file they were read from, unchanged and
    in order, and that file is what Go writes, its text is re-used as a whole (a
    create adds one record to a 10,000-record file without touching the others)."""
    records = records if isinstance(records, list) else list(records)
    if records:
        src = records[0].source
        if src is not None and src.detached == 0 and len(src.records) == src.count:
            n = src.count
            # list == compares items by identity first: a C-speed check of order
            if records[:n] == src.records and src.canonical():
                data = src.data  # the text's very bytes: no copying and encoding
                if len(records) == n:
                    return data if data is not None else to_utf8(src.text)
                texts = [
                    r.text if r.text is not None else r.text_for_save(path) for r in records[n:]
                ]
                if data is not None:
                    head = memoryview(data)[:-1]  # (a slice of bytes would copy them)
                    return b"".join((head, b",", to_utf8(",".join(texts)), b"]"))
                return to_utf8(src.text[:-1] + "," + ",".join(texts) + "]")
    texts = [r.text if r.text is not None else r.text_for_save(path) for r in records]
    return to_utf8("[" + ",".join(texts) + "]")


def decode_mounts(data: bytes, path: str) -> list[tuple[str, str, int]]:
    """``(id, path, count)`` entries of mountpoints.json; CorruptStore naming ``path``."""
    if not data:
        return []
    try:
        raw = _json_loads(data)
        if raw is None:
            return []
        if not isinstance(raw, list):
            raise ValueError("expected a JSON array")
        out = []
        for entry in raw:
            if not isinstance(entry, dict):
                raise ValueError(f"entry {entry!r} is not an object")
            ident = entry.get("id") or ""
            mount = entry.get("path") or ""
            count = entry.get("count") or 0
            if type(ident) is not str or type(mount) is not str or type(count) is not int:
                raise ValueError(f"entry {entry!r} has a field of the wrong type")
            out.append((ident, mount, count))
        return out
    except ValueError as e:
        raise CorruptStore(f'loading "{path}": {e}') from None


def encode_mounts(entries: Iterable[tuple[str, str, int]]) -> bytes:
    """mountpoints.json bytes: ``[{"id":..,"path":..,"count":..}]`` as Go writes them."""
    return to_utf8(go_dumps([{"id": i, "path": p, "count": c} for i, p, c in entries]))


def __getattr__(name: str) -> Any:
    if name == "Layer":  # the snapshot class lives (and is imported lazily) apart
        from layerstore.snapshot import Layer

        return Layer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
