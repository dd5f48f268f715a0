"""The ``layerstore`` command: the layer verbs of Go's ``containers-storage`` CLI.

Verbs, flags, output formats and exit codes follow the Go CLI (Debian v1.43; the
observed formats are in ``tests/interop/GO_CLI_FORMATS.md``), so scripts written for
``containers-storage`` run unchanged. Where Go 1.43 fails on valid input (mounting by
name or id prefix, unmounting by path, ``shutdown -f`` never returning) we do the
useful thing instead. Error lines keep Go's text and name the layer, item or file.

Adding a verb is one function ``_verb_xxx(ctx) -> int`` (arguments in ``ctx.args``,
options through ``ctx.flag``) plus one entry in :data:`COMMANDS`. Argument parsing
mimics Go's ``mflag``: global flags before the verb or after it, verb flags after the
verb, and flags end at the first positional argument.

Import cost matters (a CLI call is short): this module imports only the standard
library's basics at load time; the store and JSON are imported when a verb runs.
"""

from __future__ import annotations

import gc
import os
import sys

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing (slow to import)
if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator, Sequence
    from contextlib import AbstractContextManager
    from dataclasses import dataclass
    from typing import IO, Any, Final

    from layerstore.snapshot import Layer
    from layerstore.store import LayerStore
else:  # the same records without importing dataclasses (slow to import)
    from layerstore._dataclass import dataclass

__all__ = ["COMMANDS", "Command", "Flag", "main", "run"]

PROG: Final = "layerstore"
_USAGE_ERROR: Final = 125  # mflag's exit code for a bad flag or --help after a verb


# ---------------------------------------------------------------------------------------
# flags and commands


@dataclass(frozen=True, slots=True)
class Flag:
    """One option. ``names[0]`` is the long name (``--json``); the others are short
    (``-j``). ``kind`` is ``bool``, ``str`` (last one wins) or ``list`` (repeatable)."""

    names: tuple[str, ...]
    kind: str
    help: str
    dest: str = ""

    @property
    def key(self) -> str:
        return self.dest or self.names[0].replace("-", "_")

    def spelled(self) -> str:
        return ", ".join(("--" if len(n) > 1 else "-") + n for n in self.names)


@dataclass(frozen=True, slots=True)
class Command:
    """A verb: its usage line, argument count limits (``max_args`` 0 = unlimited),
    its own flags, and the function that runs it."""

    name: str
    args_help: str
    usage: str
    action: Callable[[Context], int]
    flags: tuple[Flag, ...] = ()
    min_args: int = 0
    max_args: int = 0
    needs_store: bool = True
    aliases: tuple[str, ...] = ()


def _default_graph_root() -> str:
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "layerstore")


def _default_run_root() -> str:
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime:
        return os.path.join(runtime, "layerstore")
    if os.geteuid() == 0:
        return "/run/layerstore"
    return f"/tmp/layerstore-run-{os.geteuid()}"


GLOBAL_FLAGS: Final = (
    Flag(("debug", "D"), "bool", "Print debugging information"),
    Flag(
        ("graph", "g"),
        "str",
        "Root of the storage tree (default $XDG_DATA_HOME/layerstore, "
        "~/.local/share/layerstore without it; never podman's store)",
    ),
    Flag(
        ("run", "R"),
        "str",
        "Root of the runtime state tree (default $XDG_RUNTIME_DIR/layerstore, "
        "else /run/layerstore for root, /tmp/layerstore-run-<uid> for others)",
    ),
    Flag(("storage-driver", "s"), "str", "Storage driver to use ($STORAGE_DRIVER, default vfs)"),
    Flag(("storage-opt",), "list", "Set storage driver options ($STORAGE_OPTS, comma separated)"),
)
_JSON: Final = Flag(("json", "j"), "bool", "Prefer JSON output")


class UsageError(Exception):
    """Bad command line; ``code`` is the exit status, ``verb`` the verb, if known."""

    def __init__(self, text: str, code: int, verb: Command | None, *, to_stdout: bool) -> None:
        super().__init__(text)
        self.code = code
        self.verb = verb
        self.to_stdout = to_stdout


class Context:
    """What a verb gets: its options, its positional arguments, the output streams and
    the store (opened before the verb runs)."""

    def __init__(self, opts: dict[str, Any], args: list[str], verb: Command) -> None:
        self.opts = opts
        self.args = args
        self.verb = verb
        self.out: IO[str] = sys.stdout
        self.err: IO[str] = sys.stderr
        self._store: LayerStore | None = None

    def flag(self, key: str) -> Any:
        return self.opts.get(key)

    @property
    def json(self) -> bool:
        return bool(self.opts.get("json"))

    @property
    def graph_root(self) -> str:
        return os.path.abspath(self.opts.get("graph") or _default_graph_root())

    @property
    def run_root(self) -> str:
        return os.path.abspath(self.opts.get("run") or _default_run_root())

    @property
    def driver(self) -> str:
        return str(self.opts.get("storage_driver") or os.environ.get("STORAGE_DRIVER") or "vfs")

    @property
    def driver_options(self) -> list[str]:
        given: list[str] = self.opts.get("storage_opt") or []
        if given:
            return given
        env = os.environ.get("STORAGE_OPTS", "")
        return [o for o in env.split(",") if o]

    @property
    def store(self) -> LayerStore:
        if self._store is None:
            from layerstore.store import LayerStore

            self._store = LayerStore(
                self.graph_root, self.run_root, self.driver, self.driver_options
            )
        return self._store

    def print(self, text: str = "") -> None:
        self.out.write(text + "\n")

    def error(self, text: str) -> None:
        self.out.flush()
        self.err.write(text + "\n")
        self.err.flush()

    def emit_json(self, value: Any) -> None:
        """One JSON document and a newline, as Go's ``json.Encoder`` writes it."""
        self.print(_go_json(value))


def _go_json(value: Any) -> str:
    from layerstore.layer import go_dumps

    return go_dumps(value)


# ---------------------------------------------------------------------------------------
# error text


def _go_strerror(e: OSError) -> str:
    text = e.strerror or str(e)
    return text[:1].lower() + text[1:]


def error_text(e: BaseException, arg: str | None = None) -> str:
    """One line for ``e``. With ``arg`` (when the caller prints the argument next to
    it, as Go does), an unknown-layer error is just Go's sentinel text."""
    from layerstore import errors

    if isinstance(e, errors.LayerUnknown) and arg is not None:
        return e.message
    if isinstance(e, errors.LayerStoreError):
        return str(e)
    if isinstance(e, OSError):
        if e.filename is not None:
            op = "open" if isinstance(e, FileNotFoundError | PermissionError) else "access"
            return f"{op} {os.fsdecode(e.filename)}: {_go_strerror(e)}"
        return _go_strerror(e)
    return f"{type(e).__name__}: {e}"


def _fail(ctx: Context, e: BaseException) -> int:
    ctx.error(error_text(e))
    return 1


# ---------------------------------------------------------------------------------------
# verbs: listing and looking up


def _verb_layers(ctx: Context) -> int:
    if not ctx.json and not ctx.flag("tree"):
        # The common case: ids (and names) only, no snapshots, one write.
        quick = bool(ctx.flag("quick"))
        lines = []
        for ident, names in ctx.store.ids_and_names():
            lines.append(ident)
            if names and not quick:
                lines.extend(f"\tname: {name}" for name in names)
        if lines:
            ctx.out.write("\n".join(lines) + "\n")
        return 0
    layers = ctx.store.layers()
    if ctx.json:
        ctx.emit_json([layer.to_json() for layer in layers])
        return 0
    if ctx.flag("tree"):
        nodes = []
        for layer in layers:
            notes = [f"name: {n}" for n in layer.names]
            if layer.mount_point:
                notes.append(f"mount: {layer.mount_point}")
            nodes.append((layer.parent or "(base)", layer.id, notes))
        for line in _tree_lines(nodes):
            ctx.print(line)
        return 0
    for layer in layers:
        ctx.print(layer.id)
        if ctx.flag("quick"):
            continue
        for name in layer.names:
            ctx.print(f"\tname: {name}")
    return 0


def _tree_lines(nodes: list[tuple[str, str, list[str]]]) -> Iterator[str]:
    """Go's ``printTree``: each root (a parent that is nobody's child; the one with the
    fewest children first), then its subtree drawn with box characters."""
    while nodes:
        children: dict[str, int] = {}
        for left, _right, _notes in nodes:
            children[left] = children.get(left, 0) + 1
        rights = {right for _left, right, _notes in nodes}
        roots = [left for left in children if left not in rights]
        if not roots:
            return
        root = min(roots, key=lambda r: children[r])
        yield root
        before = len(nodes)
        nodes = yield from _subtree(root, nodes, 0, [])
        if len(nodes) == before:
            return


_Node = tuple[str, str, list[str]]


def _subtree(
    root: str, nodes: list[_Node], indent: int, continued: list[int]
) -> Generator[str, None, list[_Node]]:
    mine = [n for n in nodes if n[0] == root]
    leftovers = [n for n in nodes if n[0] != root]
    for i, (_left, right, notes) in enumerate(mine):
        prefix = [" "] * indent
        for column in continued:
            prefix[column] = "\u2502"
        head = "".join(prefix)
        last = i == len(mine) - 1
        sub = continued if last else [*continued, indent]
        yield f"{head}{'└' if last else '├'}─{right}"
        for note in notes:
            yield f"{head}{' ' if last else '│'} {note}"
        leftovers = yield from _subtree(right, leftovers, indent + 2, sub)
    return leftovers


def _verb_layer(ctx: Context) -> int:
    matched = []
    for arg in ctx.args:
        try:
            matched.append(ctx.store.get(arg))
        except KeyError:
            continue
    if ctx.json:
        ctx.emit_json([layer.to_json() for layer in matched])
    else:
        for layer in matched:
            ctx.print(f"ID: {layer.id}")
            for m in layer.uid_map:
                ctx.print(
                    f"UID mapping: (container={m.container_id}, host={m.host_id}, size={m.size})"
                )
            for m in layer.gid_map:
                ctx.print(
                    f"GID mapping: (container={m.container_id}, host={m.host_id}, size={m.size})"
                )
            if layer.parent:
                ctx.print(f"Parent: {layer.parent}")
            for name in layer.names:
                ctx.print(f"Name: {name}")
    return 0 if len(matched) == len(ctx.args) else 1


def _verb_exists(ctx: Context) -> int:
    found: dict[str, bool] = {}
    missing = False
    for arg in ctx.args:
        there = ctx.store.exists(arg)
        found[arg] = there
        # Only layers live here: asking for an image or a container never succeeds.
        if not there or ctx.flag("image") or ctx.flag("container"):
            missing = True
    if ctx.json:
        ctx.emit_json(dict(sorted(found.items())))
    elif not ctx.flag("quiet"):
        for arg, there in found.items():
            ctx.print(f"{arg}: {'true' if there else 'false'}")
    return 1 if missing else 0


def _verb_status(ctx: Context) -> int:
    opts = ctx.driver_options
    pairs = [
        ("Root", ctx.graph_root),
        ("Run Root", ctx.run_root),
        ("Driver Name", ctx.store.driver.name),
        ("Driver Options", "[" + " ".join(opts) + "]"),
        *ctx.store.status(),
    ]
    if ctx.json:
        ctx.emit_json([list(p) for p in pairs])
    else:
        # Go writes the status lines to standard error.
        for key, value in pairs:
            ctx.error(f"{key}: {value}")
    return 0


def _verb_version(ctx: Context) -> int:
    from layerstore import __version__

    pairs = [("Version", __version__)]
    if ctx.json:
        ctx.emit_json([list(p) for p in pairs])
    else:
        for key, value in pairs:
            ctx.print(f"{key}: {value}")
    return 0


# ---------------------------------------------------------------------------------------
# verbs: create and delete


def _read_subid_map(path: str, owner: str) -> list[str]:
    """``/etc/subuid`` ranges of ``owner`` as ``container:host:size`` texts, stacked
    from container id 0 upwards."""
    out = []
    next_id = 0
    with open(path, encoding="utf-8") as f:
        for line in f:
            fields = line.strip().split(":")
            if len(fields) == 3 and fields[0] == owner:
                out.append(f"{next_id}:{fields[1]}:{fields[2]}")
                next_id += int(fields[2])
    if not out:
        raise ValueError(f"no ranges for {owner!r} in {path}")
    return out


def _id_maps(ctx: Context, which: str) -> tuple[Any, ...]:
    from layerstore.idtools import parse_id_maps

    if ctx.flag(f"host{which}map"):
        return ()
    text: str | None = ctx.flag(f"{which}map")
    sub: str | None = ctx.flag(f"sub{which}map")
    if sub:
        text = ",".join(_read_subid_map(f"/etc/sub{which}", sub))
    if not text:
        return ()
    return parse_id_maps(text)


def _verb_create_layer(ctx: Context) -> int:
    try:
        layer = _create_layer(ctx, None)
    except _Reported as e:
        ctx.error(str(e))
        return 1
    except Exception as e:
        return _fail(ctx, e)
    return _print_created(ctx, layer)


def _create_layer(ctx: Context, diff: IO[bytes] | None) -> Layer:
    """``create-layer`` / ``import-layer``: the layer their flags and argument describe."""
    try:
        uid_map = _id_maps(ctx, "uid")
        gid_map = _id_maps(ctx, "gid")
    except (ValueError, OSError) as e:
        raise _Reported(f"initializing ID mappings: {error_text(e)}") from e
    layer, _size = ctx.store.create(
        id=ctx.flag("id") or None,
        parent=ctx.args[0] if ctx.args else None,
        names=ctx.flag("name") or (),
        mount_label=ctx.flag("label") or "",
        uid_map=uid_map,
        gid_map=gid_map,
        writeable=not ctx.flag("readonly"),
        diff=diff,
    )
    return layer


def _print_created(ctx: Context, layer: Layer) -> int:
    if ctx.json:
        ctx.emit_json(layer.to_json())
    else:
        ctx.print(layer.id)
        for name in layer.names:
            ctx.print(f"\t{name}")
    return 0


def _verb_delete_layer(ctx: Context) -> int:
    results: dict[str, str] = {}
    for arg in ctx.args:
        try:
            ctx.store.delete(arg)
            results[arg] = ""
        except Exception as e:
            results[arg] = error_text(e, arg)
    if ctx.json:
        ctx.emit_json(dict(sorted(results.items())))
    else:
        for arg, text in results.items():
            if text:
                ctx.error(f"{arg}: {text}")
    return 1 if any(results.values()) else 0


def _verb_wipe(ctx: Context) -> int:
    try:
        ctx.store.wipe()
    except Exception as e:
        if ctx.json:
            ctx.emit_json({})
            return 1
        ctx.error(f"wipe: {error_text(e)}")
        return 1
    if ctx.json:
        ctx.emit_json("")
    return 0


def _verb_shutdown(ctx: Context) -> int:
    store = ctx.store
    try:
        with store.writing():
            mounted = [layer.id for layer in store.layers() if layer.mount_count > 0]
            if mounted and not ctx.flag("force"):
                raise _ShutdownRefused(mounted[0])
            for layer_id in mounted:
                store.unmount(layer_id, force=True)
    except Exception as e:
        if ctx.json:
            ctx.emit_json({})
        elif isinstance(e, _ShutdownRefused):
            ctx.error(f"shutdown: a layer is mounted ({e}): layer is in use by a container")
        else:
            ctx.error(f"shutdown: {error_text(e)}")
        return 1
    if ctx.json:
        ctx.emit_json("")
    return 0


class _ShutdownRefused(Exception):
    pass


# ---------------------------------------------------------------------------------------
# verbs: mounts


def _verb_mount(ctx: Context) -> int:
    from layerstore.drivers.base import MountOptions

    options = [o for o in (ctx.flag("opt") or "").split(",") if o]
    if ctx.flag("ro") and "ro" not in options:
        options.append("ro")
    results = []
    for arg in ctx.args:
        try:
            path = ctx.store.mount(
                arg, MountOptions(mount_label=ctx.flag("label") or "", options=tuple(options))
            )
            results.append({"id": arg, "mountpoint": path, "error": ""})
        except Exception as e:
            results.append({"id": arg, "mountpoint": "", "error": error_text(e, arg)})
    if ctx.json:
        ctx.emit_json(results)
    else:
        for r in results:
            if r["error"]:
                ctx.error(f"{r['error']} while mounting {r['id']}")
            ctx.print(r["mountpoint"])
    return 1 if any(r["error"] for r in results) else 0


def _each_id(ctx: Context, act: Callable[[str], str], failure: str) -> int:
    """Go's loop of ``unmount`` and ``mounted``: ``act(id)`` for every argument, printing
    the line it returns (if any; Go prints it with --json too); the errors gathered go out
    as JSON, or as ``failure`` lines (``{error}``, ``{id}``); exit 1 when any failed."""
    results = []
    for arg in ctx.args:
        try:
            line = act(arg)
            results.append({"id": arg, "error": ""})
            if line:
                ctx.print(line)
        except Exception as e:
            results.append({"id": arg, "error": error_text(e, arg)})
    if ctx.json:
        ctx.emit_json(results)
    else:
        for r in results:
            if r["error"]:
                ctx.error(failure.format(error=r["error"], id=r["id"]))
    return 1 if any(r["error"] for r in results) else 0


def _verb_unmount(ctx: Context) -> int:
    force = bool(ctx.flag("force"))

    def unmount(arg: str) -> str:
        still = ctx.store.unmount(arg, force=force)
        return "" if still else f"{arg} mountpoint unmounted"

    return _each_id(ctx, unmount, "{error} while unmounting {id}")


def _verb_mounted(ctx: Context) -> int:
    def mounted(arg: str) -> str:
        return f"{arg} mounted" if ctx.store.mounted(arg) > 0 else ""

    return _each_id(ctx, mounted, "{error} checking if {id} is mounted")


def _verb_layer_parent_owners(ctx: Context) -> int:
    matched = []
    for arg in ctx.args:
        try:
            matched.append(ctx.store.get(arg))
        except KeyError:
            continue
    for layer in matched:
        try:
            uids, gids = ctx.store.parent_owners(layer.id)
        except Exception as e:
            ctx.error(f"LayerParentOwner: {error_text(e)}")
            return 1
        if ctx.json:
            ctx.emit_json({"ID": layer.id, "UIDs": uids or None, "GIDs": gids or None})
        else:
            ctx.print(f"ID: {layer.id}")
            if uids:
                ctx.print(f"UIDs: [{' '.join(map(str, uids))}]")
            if gids:
                ctx.print(f"GIDs: [{' '.join(map(str, gids))}]")
    return 0 if len(matched) == len(ctx.args) else 1


# ---------------------------------------------------------------------------------------
# verbs: names and metadata


def _print_names(ctx: Context, names: Sequence[str], always: bool) -> None:
    if ctx.json:
        ctx.emit_json(list(names))
    elif always:
        for name in names:
            ctx.print(name)


def _verb_get_names(ctx: Context) -> int:
    try:
        names = ctx.store.get(ctx.args[0]).names
    except Exception as e:
        return _fail(ctx, e)
    _print_names(ctx, names, always=True)
    return 0


def _verb_add_names(ctx: Context) -> int:
    store = ctx.store
    try:
        with store.writing():
            layer = store.get(ctx.args[0])
            # Go's CLI sets old + new, so the old names stay first.
            store.set_names(layer.id, [*layer.names, *(ctx.flag("name") or [])])
            names = store.get(layer.id).names
    except Exception as e:
        return _fail(ctx, e)
    _print_names(ctx, names, always=False)
    return 0


def _verb_set_names(ctx: Context) -> int:
    store = ctx.store
    try:
        with store.writing():
            layer = store.get(ctx.args[0])
            store.set_names(layer.id, ctx.flag("name") or [])
            names = store.get(layer.id).names
    except Exception as e:
        return _fail(ctx, e)
    _print_names(ctx, names, always=False)
    return 0


def _verb_metadata(ctx: Context) -> int:
    found: dict[str, str] = {}
    missing = False
    for arg in ctx.args:
        try:
            text = ctx.store.metadata(arg)
        except KeyError:
            missing = True
            continue
        found[arg] = text[:-1] if text.endswith("\n") else text
    if ctx.json:
        ctx.emit_json(dict(sorted(found.items())))
    else:
        for arg in ctx.args:
            if ctx.flag("quiet"):
                ctx.print(found.get(arg, ""))
            else:
                ctx.print(f"{arg}: {found.get(arg, '')}")
    return 1 if missing else 0


def _verb_set_metadata(ctx: Context) -> int:
    text: str = ctx.flag("metadata") or ""
    path: str | None = ctx.flag("metadata_file")
    if not path and not text:
        ctx.error("no new metadata provided")
        return 1
    try:
        if path:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                text = f.read()
        ctx.store.set_metadata(ctx.args[0], text)
    except Exception as e:
        return _fail(ctx, e)
    return 0


# ---------------------------------------------------------------------------------------
# verbs: big data


def _verb_list_layer_data(ctx: Context) -> int:
    try:
        keys = ctx.store.big_data_names(ctx.store.get(ctx.args[0]).id)
    except Exception as e:
        return _fail(ctx, e)
    if ctx.json:
        ctx.emit_json(list(keys) or None)
    else:
        for key in keys:
            ctx.print(key)
    return 0


def _verb_get_layer_data(ctx: Context) -> int:
    import shutil

    arg, key = ctx.args[0], ctx.args[1]
    try:
        layer = ctx.store.get(arg)
        try:
            src = ctx.store.big_data(layer.id, key)
        except FileNotFoundError:
            ctx.error(
                f"locating item named {_quote(key)} for layer with ID {_quote(layer.id)}: "
                "file does not exist"
            )
            return 1
        with src:
            out_path: str | None = ctx.flag("file")
            if out_path:
                with open(out_path, "wb") as dst:
                    shutil.copyfileobj(src, dst)
            else:
                ctx.out.flush()
                shutil.copyfileobj(src, sys.stdout.buffer)
                sys.stdout.buffer.flush()
    except Exception as e:
        return _fail(ctx, e)
    return 0


def _verb_set_layer_data(ctx: Context) -> int:
    arg, key = ctx.args[0], ctx.args[1]
    path: str | None = ctx.flag("file")
    try:
        if path:
            with open(path, "rb") as src:
                ctx.store.set_big_data(arg, key, src)
        else:
            ctx.store.set_big_data(arg, key, sys.stdin.buffer)
    except Exception as e:
        return _fail(ctx, e)
    return 0


def _quote(text: str) -> str:
    import json

    return json.dumps(text, ensure_ascii=False)


# ---------------------------------------------------------------------------------------
# verbs: the data path (import, apply, diff, changes, diff size) and check
#
# Progress: drawn only when standard error is a terminal and --json is off; otherwise
# the input goes to the store untouched (a file's fd is read natively) and the output
# loop is the plain copy, so a pipe or a script pays nothing for it.


def _progress_wanted(ctx: Context) -> bool:
    if ctx.json:
        return False
    try:
        return ctx.err.isatty()
    except (ValueError, AttributeError):
        return False


def _diff_input(ctx: Context, label: str) -> AbstractContextManager[IO[bytes]]:
    """:func:`_diff_input_opened` as a context manager (contextlib imported only here)."""
    import contextlib

    return contextlib.contextmanager(_diff_input_opened)(ctx, label)


def _diff_input_opened(ctx: Context, label: str) -> Iterator[IO[bytes]]:
    """The tarball to apply: ``-f FILE`` (opened before anything else, as Go does) or
    standard input, streamed. With a progress line, it is read through a
    :class:`~layerstore.progress.CountingReader` (1 MiB chunks); the total is the
    file's size when it is a regular file."""
    path: str | None = ctx.flag("file")
    # Standard input unbuffered (nothing has read it yet): the native side then reads
    # the fd itself, with no Python copy loop in between.
    stdin: IO[bytes] = getattr(sys.stdin.buffer, "raw", sys.stdin.buffer)
    source: IO[bytes] = open(path, "rb", buffering=0) if path else stdin  # noqa: SIM115
    try:
        if not _progress_wanted(ctx):
            yield source
            return
        import stat

        from layerstore.progress import CountingReader, Progress

        total = None
        try:
            st = os.fstat(source.fileno())
            if stat.S_ISREG(st.st_mode):
                total = max(0, st.st_size - source.tell())
        except (OSError, ValueError, AttributeError):
            pass
        with Progress(label, ctx.err, total) as progress:
            yield CountingReader(source, progress)
    finally:
        if path:
            source.close()


def _verb_import_layer(ctx: Context) -> int:
    try:
        with _diff_input(ctx, "import-layer") as source:
            layer = _create_layer(ctx, source)
    except _Reported as e:
        ctx.error(str(e))
        return 1
    except Exception as e:
        return _fail(ctx, e)
    return _print_created(ctx, layer)


class _Reported(Exception):
    """An error whose text is already the line to print."""


def _verb_applydiff(ctx: Context) -> int:
    try:
        with _diff_input(ctx, "applydiff") as source:
            ctx.store.apply_diff(ctx.args[0], source)
    except Exception as e:
        return _fail(ctx, e)
    return 0


def _diff_compression(ctx: Context) -> Any:
    """Go's precedence: ``-x`` over ``-b`` over ``-c`` over ``-u``; None (the layer's
    recorded compression) when none is given."""
    from layerstore.archive import Compression

    for key, value in (
        ("xz", Compression.XZ),
        ("bzip2", Compression.BZIP2),
        ("zstd", Compression.ZSTD),
        ("gzip", Compression.GZIP),
        ("uncompressed", Compression.NONE),
    ):
        if ctx.flag(key):
            return value
    return None


def _splice_all(src_fd: int, dst_fd: int, add: Callable[[int], None] | None) -> bool:
    """Move everything from the pipe ``src_fd`` to ``dst_fd`` in the kernel; False
    (nothing moved) when ``dst_fd`` cannot take a splice (a terminal, O_APPEND)."""
    import errno

    moved = False
    while True:
        try:
            n = os.splice(src_fd, dst_fd, _COPY_CHUNK)
        except OSError as e:
            if not moved and e.errno in (errno.EINVAL, errno.ENOSYS, errno.EBADF):
                return False
            raise
        if n == 0:
            return True
        moved = True
        if add is not None:
            add(n)


_COPY_CHUNK: Final = 1 << 20


def _copy_out(src_fd: int, dst: IO[bytes], add: Callable[[int], None] | None) -> None:
    """Copy the pipe ``src_fd`` to ``dst`` until end of file, one chunk at a time."""
    try:
        dst_fd = dst.fileno()
    except (OSError, ValueError, AttributeError):
        dst_fd = -1
    if dst_fd >= 0:
        dst.flush()
        if _splice_all(src_fd, dst_fd, add):
            return
    buffer = bytearray(_COPY_CHUNK)
    view = memoryview(buffer)
    while True:
        n = os.readv(src_fd, [buffer])
        if n == 0:
            break
        if dst_fd >= 0:
            done = 0
            while done < n:
                done += os.write(dst_fd, view[done:n])
        else:
            dst.write(view[:n])
        if add is not None:
            add(n)
    if dst_fd < 0:
        dst.flush()


def _verb_diff(ctx: Context) -> int:
    out_path: str | None = ctx.flag("file")
    try:
        # Go creates the output file first (an unknown layer leaves it empty).
        out: IO[bytes] = open(out_path, "wb") if out_path else sys.stdout.buffer  # noqa: SIM115
    except OSError as e:
        return _fail(ctx, e)
    try:
        from layerstore.archive import Compression

        to = ctx.args[0]
        from_ = ctx.args[1] if len(ctx.args) > 1 else None
        compression = _diff_compression(ctx)
        store = ctx.store
        total: int | None = None
        if _progress_wanted(ctx):
            # The size is known ahead when the output is the original tarball as is.
            layer = store.get(to)
            chosen = layer.compression if compression is None else compression
            if from_ is None and chosen == Compression.NONE and layer.uncompressed_size > 0:
                total = layer.uncompressed_size
        ctx.out.flush()
        if not _progress_wanted(ctx):
            out.flush()
            store.write_diff(to, out.fileno(), from_, compression)  # no pipe in between
            return 0
        from layerstore.progress import Progress

        with (
            store.diff(to, from_, compression) as stream,
            Progress("diff", ctx.err, total) as progress,
        ):
            _copy_out(stream.fileno(), out, progress.add)
            stream.close()  # the producer's error, if any, before the final line
    except BrokenPipeError:
        raise
    except Exception as e:
        return _fail(ctx, e)
    finally:
        if out_path:
            out.close()
    return 0


def _verb_diffsize(ctx: Context) -> int:
    try:
        n = ctx.store.diff_size(ctx.args[0], ctx.args[1] if len(ctx.args) > 1 else None)
    except Exception as e:
        return _fail(ctx, e)
    ctx.print(str(n))
    return 0


_GO_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's ``%q`` (``strconv.Quote``) of a path: printable characters as they are,
    the C escapes, ``\\uXXXX``/``\\UXXXXXXXX`` for other characters and ``\\xNN`` for
    bytes that are not UTF-8 (carried here as surrogate escapes)."""
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in _GO_ESCAPES:
            out.append(_GO_ESCAPES[ch])
        elif 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code - 0xDC00:02x}")
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80:
            out.append(f"\\x{code:02x}")
        elif code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)


def _verb_changes(ctx: Context) -> int:
    try:
        found = ctx.store.changes(ctx.args[0], ctx.args[1] if len(ctx.args) > 1 else None)
    except Exception as e:
        return _fail(ctx, e)
    if ctx.json:
        ctx.emit_json([{"Path": c.path, "Kind": int(c.kind)} for c in found] or None)
        return 0
    words = ("Modify", "Add", "Delete")
    for change in found:
        ctx.print(f"{words[change.kind]} {go_quote(change.path)}")
    return 0


def _verb_check(ctx: Context) -> int:
    store = ctx.store
    try:
        with store.reading():
            ids = [store.get(arg).id for arg in ctx.args] or store.ids()
    except Exception as e:
        return _fail(ctx, e)
    report: dict[str, list[str]] = {}
    for layer_id in ids:
        problems = _check_layer(ctx, layer_id)
        if problems:
            report[layer_id] = problems
            if not ctx.json:
                ctx.print(f"layer {layer_id}:")
                for problem in problems:
                    ctx.print(f" {problem}")
    if ctx.json:
        ctx.emit_json({"Layers": report})
    elif report:
        ctx.error(f"{len(report)} layer errors")
    return 1 if report else 0


def _check_layer(ctx: Context, layer_id: str) -> list[str]:
    """The problems of one layer (empty when it is intact): its tree is there, and its
    tarball reassembled from tar-split passes every file's CRC-64 and has the recorded
    diff-size and diff-digest. Holds the store's read lock while it reads the layer."""
    store = ctx.store
    with store.reading():
        try:
            layer = store.get(layer_id)
        except KeyError:
            return []  # deleted since the list was taken: nothing left to check
        roots = store.driver.diff_roots(layer.id)
        if not os.path.isdir(roots[0]):
            return [f"layer directory {roots[0]} is missing"]
        tspath = os.path.join(store.layerdir, layer.id + ".tar-split.gz")
        if not os.path.exists(tspath):
            if layer.uncompressed_digest:
                return [f"tar-split file {tspath} is missing: the layer cannot be verified"]
            return []  # never had a diff applied: nothing recorded to check against
        if ctx.flag("quick"):
            return []
        try:
            size, digest = _reassembled_size_and_digest(ctx, layer)
        except Exception as e:
            try:
                return _file_problems(tspath, roots) or [error_text(e)]
            except (OSError, ValueError, EOFError) as unreadable:
                return [f"tar-split file {tspath} cannot be read: {unreadable}"]
    problems = []
    if layer.uncompressed_digest:
        if size != layer.uncompressed_size:
            problems.append(
                f"reassembled size {size} differs from the recorded diff-size "
                f"{layer.uncompressed_size}"
            )
        if digest != layer.uncompressed_digest:
            problems.append(
                f"reassembled digest {digest} differs from the recorded diff-digest "
                f"{layer.uncompressed_digest}"
            )
    return problems


def _reassembled_size_and_digest(ctx: Context, layer: Any) -> tuple[int, str]:
    """Size and SHA-256 of the layer's tarball reassembled from tar-split (read in
    1 MiB chunks; the bytes go nowhere else)."""
    import hashlib

    from layerstore.archive import Compression

    hasher = hashlib.sha256()
    size = 0
    buffer = bytearray(_COPY_CHUNK)
    view = memoryview(buffer)
    progress = None
    if _progress_wanted(ctx):
        from layerstore.progress import Progress

        total = layer.uncompressed_size if layer.uncompressed_size > 0 else None
        progress = Progress(f"check {layer.id[:12]}", ctx.err, total, keep=False)
        progress.start()
    ok = False
    try:
        with ctx.store.diff(layer.id, None, Compression.NONE) as stream:
            fd = stream.fileno()
            while n := os.readv(fd, [buffer]):
                hasher.update(view[:n])
                size += n
                if progress is not None:
                    progress.add(n)
            stream.close()  # raises the reassembly's error (a changed file)
        ok = True
    finally:
        if progress is not None:
            progress.finish(ok)
    return size, "sha256:" + hasher.hexdigest()


def _file_problems(tspath: str, roots: Sequence[str]) -> list[str]:
    """Every file of the tar-split ``tspath`` that is missing or fails its CRC-64 in
    ``roots`` (uppermost first), with Go's message text. Runs only after a reassembly
    failed, to name all the damaged files rather than the first."""
    import base64
    import gzip
    import json
    import mmap

    from layerstore import _native

    problems = []
    with gzip.open(tspath, "rb") as entries:
        for line in entries:
            entry = json.loads(line)
            if entry.get("type") != 1 or not entry.get("size"):
                continue
            if entry.get("name_raw"):
                raw = base64.b64decode(entry["name_raw"])
            else:
                raw = str(entry.get("name", "")).encode("utf-8", "surrogateescape")
            name = raw.decode("utf-8", "surrogateescape")
            rel = os.path.normpath(b"/" + raw).lstrip(b"/")
            path = next(
                (
                    p
                    for p in (os.path.join(os.fsencode(r), rel) for r in roots)
                    if os.path.lexists(p)
                ),
                None,
            )
            if path is None:
                problems.append(f"file {go_quote(name)} is missing")
                continue
            try:
                with open(path, "rb") as f:
                    length = os.fstat(f.fileno()).st_size
                    if length:
                        with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
                            crc = _native.crc64(data)
                    else:
                        crc = _native.crc64(b"")
            except OSError as e:
                problems.append(f"file {go_quote(name)}: {_go_strerror(e)}")
                continue
            want = int.from_bytes(base64.b64decode(entry.get("payload") or ""), "big")
            if crc != want:
                problems.append(f"file integrity checksum failed for {go_quote(name)}")
    return problems


# ---------------------------------------------------------------------------------------
# the verb table

_NAME_FLAG: Final = Flag(("name", "n"), "list", "Layer name")
_MAP_FLAGS: Final = (
    Flag(("uidmap",), "str", "UID map (container:host:size[,...])"),
    Flag(("gidmap",), "str", "GID map (container:host:size[,...])"),
    Flag(("hostuidmap",), "bool", "Force host UID map"),
    Flag(("hostgidmap",), "bool", "Force host GID map"),
    Flag(("subuidmap",), "str", "subuid UID map for a user"),
    Flag(("subgidmap",), "str", "subgid GID map for a group"),
)
_CREATE_FLAGS: Final = (
    Flag(("id", "i"), "str", "Layer ID"),
    Flag(("label", "l"), "str", "Mount Label"),
    _NAME_FLAG,
    Flag(("readonly", "r"), "bool", "Mark as read-only"),
    *_MAP_FLAGS,
)
_FILE_IN_FLAG: Final = Flag(("file", "f"), "str", "Read from file instead of stdin")

COMMANDS: Final[dict[str, Command]] = {
    c.name: c
    for c in (
        Command(
            "layers",
            "[options [...]]",
            "List layers",
            _verb_layers,
            (
                _JSON,
                Flag(("tree", "t"), "bool", "Use a tree"),
                Flag(("quick", "q"), "bool", "Just the IDs"),
            ),
        ),
        Command(
            "layer",
            "[options [...]] layerNameOrID [...]",
            "Examine a layer",
            _verb_layer,
            (_JSON,),
            min_args=1,
        ),
        Command(
            "create-layer",
            "[options [...]] [parentLayerNameOrID]",
            "Create a new layer",
            _verb_create_layer,
            (_JSON, *_CREATE_FLAGS),
            max_args=1,
        ),
        Command(
            "import-layer",
            "[options [...]] [parentLayerNameOrID]",
            "Import a new layer",
            _verb_import_layer,
            (_JSON, _FILE_IN_FLAG, *_CREATE_FLAGS),
            max_args=1,
        ),
        Command(
            "changes",
            "[options [...]] layerNameOrID [referenceLayerNameOrID]",
            "Compare two layers",
            _verb_changes,
            (_JSON,),
            min_args=1,
            max_args=2,
        ),
        Command(
            "diffsize",
            "[options [...]] layerNameOrID [referenceLayerNameOrID]",
            "Compare two layers",
            _verb_diffsize,
            min_args=1,
            max_args=2,
            aliases=("diff-size",),
        ),
        Command(
            "diff",
            "[options [...]] layerNameOrID [referenceLayerNameOrID]",
            "Compare two layers",
            _verb_diff,
            (
                Flag(("file", "f"), "str", "Write to file instead of stdout"),
                Flag(("uncompressed", "u"), "bool", "Use no compression"),
                Flag(("gzip", "c"), "bool", "Compress using gzip"),
                Flag(("zstd",), "bool", "Compress using zstd (layerstore only)"),
                Flag(
                    ("bzip2", "bz2", "b"), "bool", "Compress using bzip2 (not currently supported)"
                ),
                Flag(("xz", "x"), "bool", "Compress using xz (not currently supported)"),
            ),
            min_args=1,
            max_args=2,
        ),
        Command(
            "applydiff",
            "[options [...]] layerNameOrID [referenceLayerNameOrID]",
            "Apply a diff to a layer",
            _verb_applydiff,
            (_FILE_IN_FLAG,),
            min_args=1,
            max_args=1,
            aliases=("apply-diff",),
        ),
        Command(
            "check",
            "[options [...]] [layerNameOrID [...]]",
            "Verify layers against their tar-split checksums and recorded digests",
            _verb_check,
            (
                _JSON,
                Flag(("quick", "q"), "bool", "Only check that the files to verify are there"),
            ),
        ),
        Command(
            "exists",
            "[LayerNameOrID [...]]",
            "Check if a layer exists",
            _verb_exists,
            (
                _JSON,
                Flag(("container", "c"), "bool", "Only succeed if the match is a container"),
                Flag(("image", "i"), "bool", "Only succeed if the match is an image"),
                Flag(("layer", "l"), "bool", "Only succeed if the match is a layer"),
                Flag(("quiet", "q"), "bool", "Don't print names"),
            ),
            min_args=1,
        ),
        Command(
            "delete-layer",
            "[LayerNameOrID [...]]",
            "Delete a layer, with safety checks",
            _verb_delete_layer,
            (_JSON,),
            min_args=1,
        ),
        Command("wipe", "", "Wipe all layers", _verb_wipe, (_JSON,)),
        Command("status", "", "Check on graph driver status", _verb_status, (_JSON,)),
        Command(
            "mount",
            "[options [...]] LayerNameOrID",
            "Mount a layer",
            _verb_mount,
            (
                _JSON,
                Flag(("label", "l"), "str", "Mount Label"),
                Flag(("opt", "o"), "str", "Mount Options"),
                Flag(("ro", "r"), "bool", "Mount read-only"),
            ),
            min_args=1,
        ),
        Command(
            "unmount",
            "LayerNameOrID",
            "Unmount a layer",
            _verb_unmount,
            (_JSON, Flag(("force", "f"), "bool", "Force the umount")),
            min_args=1,
            aliases=("umount",),
        ),
        Command(
            "mounted",
            "LayerNameOrID",
            "Check if a file system is mounted",
            _verb_mounted,
            (_JSON,),
            min_args=1,
        ),
        Command(
            "get-names",
            "[options [...]] layerNameOrID",
            "Get layer name or names",
            _verb_get_names,
            (_JSON,),
            min_args=1,
            aliases=("getnames",),
        ),
        Command(
            "add-names",
            "[options [...]] layerNameOrID",
            "Add layer name or names",
            _verb_add_names,
            (_JSON, Flag(("name", "n"), "list", "New name")),
            min_args=1,
            aliases=("addnames",),
        ),
        Command(
            "set-names",
            "[options [...]] layerNameOrID",
            "Set layer name or names",
            _verb_set_names,
            (_JSON, Flag(("name", "n"), "list", "New name")),
            min_args=1,
            aliases=("setnames",),
        ),
        Command(
            "metadata",
            "[LayerNameOrID [...]]",
            "Retrieve layer metadata",
            _verb_metadata,
            (_JSON, Flag(("quiet", "q"), "bool", "Omit names and IDs")),
            min_args=1,
        ),
        Command(
            "set-metadata",
            "[options [...]] layerNameOrID",
            "Set layer metadata",
            _verb_set_metadata,
            (
                Flag(("metadata", "m"), "str", "Metadata"),
                Flag(("metadata-file", "f"), "str", "Metadata File"),
            ),
            min_args=1,
            max_args=1,
            aliases=("setmetadata",),
        ),
        Command(
            "list-layer-data",
            "[options [...]] layerNameOrID",
            "List data items that are attached to a layer",
            _verb_list_layer_data,
            (_JSON,),
            min_args=1,
            max_args=1,
        ),
        Command(
            "get-layer-data",
            "[options [...]] layerID dataName",
            "Get data that is attached to a layer",
            _verb_get_layer_data,
            (Flag(("file", "f"), "str", "Write data to file"),),
            min_args=2,
        ),
        Command(
            "set-layer-data",
            "[options [...]] layerID dataName",
            "Set data that is attached to a layer",
            _verb_set_layer_data,
            (Flag(("file", "f"), "str", "Read data from file"),),
            min_args=2,
        ),
        Command(
            "layer-parent-owners",
            "[options [...]] layerNameOrID [...]",
            "Compute the set of unmapped parent UIDs and GIDs of the layer",
            _verb_layer_parent_owners,
            (_JSON,),
            min_args=1,
        ),
        Command(
            "shutdown",
            "",
            "Shut down layer storage",
            _verb_shutdown,
            (_JSON, Flag(("force", "f"), "bool", "Unmount mounted layers first")),
        ),
        Command(
            "version",
            "",
            "Return layerstore version information",
            _verb_version,
            (_JSON,),
            needs_store=False,
        ),
    )
}
_BY_NAME: Final = {alias: c for c in COMMANDS.values() for alias in (c.name, *c.aliases)}


# ---------------------------------------------------------------------------------------
# parsing and help


def _flag_table(flags: Sequence[Flag]) -> dict[str, Flag]:
    return {name: f for f in flags for name in f.names}


def _parse_flags(
    argv: list[str], flags: Sequence[Flag], opts: dict[str, Any], verb: Command | None
) -> list[str]:
    """Consume flags from ``argv`` until the first positional argument (``mflag``'s
    rule); return the rest. Values go into ``opts``."""
    table = _flag_table(flags)
    see = f"See '{PROG}{' ' + verb.name if verb else ''} --help'."
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[i + 1 :]
        if not arg.startswith("-") or arg == "-":
            return argv[i:]
        name, eq, value = arg.lstrip("-").partition("=")
        if name == "help" or name == "h":
            raise UsageError("--help", 0 if verb is None else _USAGE_ERROR, verb, to_stdout=True)
        flag = table.get(name)
        if flag is None:
            raise UsageError(
                f"flag provided but not defined: {arg.partition('=')[0]}\n{see}",
                _USAGE_ERROR,
                verb,
                to_stdout=False,
            )
        if flag.kind == "bool":
            if eq and value.lower() not in ("true", "false", "1", "0", "t", "f"):
                raise UsageError(
                    f'invalid boolean value "{value}" for flag {arg.partition("=")[0]}\n{see}',
                    _USAGE_ERROR,
                    verb,
                    to_stdout=False,
                )
            opts[flag.key] = not eq or value.lower() in ("true", "1", "t")
            i += 1
            continue
        if not eq:
            if i + 1 >= len(argv):
                raise UsageError(
                    f"flag needs an argument: {arg}\n{see}", _USAGE_ERROR, verb, to_stdout=False
                )
            value = argv[i + 1]
            i += 1
        i += 1
        if flag.kind == "list":
            opts.setdefault(flag.key, []).append(value)
        else:
            opts[flag.key] = value
    return []


def _options_text(flags: Sequence[Flag]) -> str:
    rows = sorted(flags, key=lambda f: f.names[0])
    width = max(len(f.spelled()) for f in rows) + 4
    return "\n".join(f"  {f.spelled():<{width}}{f.help}" for f in rows)


def _print_usage(verb: Command | None, *, asked: bool = False) -> None:
    """Go prints the usage lines on stdout and the option table on stderr; when help was
    asked for (``--help``) we print it all on stdout, so it can be paged."""
    if verb is None:
        head = [f"Usage: {PROG} command [options [...]]", "", "Commands:", ""]
        head += [f"  {c.name:<30}{c.usage}" for c in COMMANDS.values()]
        head += ["", "Options:"]
        flags: Sequence[Flag] = GLOBAL_FLAGS
    else:
        head = [f"Usage: {PROG} {verb.name} {verb.args_help}", "", verb.usage, "", "Options:"]
        flags = (*GLOBAL_FLAGS, *verb.flags)
    sys.stdout.write("\n".join(head) + "\n")
    sys.stdout.flush()
    options = sys.stdout if asked else sys.stderr
    options.write("\n" + _options_text(flags) + "\n")
    options.flush()


def _parse(argv: list[str]) -> tuple[Command, dict[str, Any], list[str]]:
    opts: dict[str, Any] = {}
    try:
        rest = _parse_flags(argv, GLOBAL_FLAGS, opts, None)
    except UsageError as e:
        if e.code == _USAGE_ERROR:
            e.code = 1  # Go: a bad flag before the verb exits 1, not 125
        raise
    if not rest:
        raise UsageError("", 1, None, to_stdout=True)
    verb = _BY_NAME.get(rest[0])
    if verb is None:
        raise UsageError(f"{rest[0]}: unrecognized command.", 1, None, to_stdout=True)
    args = _parse_flags(rest[1:], (*GLOBAL_FLAGS, *verb.flags), opts, verb)
    if verb.min_args and len(args) < verb.min_args:
        raise UsageError(f"{verb.name}: more arguments required.", 1, verb, to_stdout=True)
    if verb.max_args and len(args) > verb.max_args:
        raise UsageError(
            f"{verb.name}: too many arguments ([{' '.join(args)}]).", 1, verb, to_stdout=True
        )
    return verb, opts, args


def _setup_logging(debug: bool) -> None:
    import logging

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(
            'time="%(asctime)s" level=%(levelname)s msg="%(message)s"',
            datefmt="%Y-%m-%dT%H:%M:%S%z",
        )
    )
    root = logging.getLogger("layerstore")
    for old in [h for h in root.handlers if getattr(h, "_layerstore_cli", False)]:
        root.removeHandler(old)  # main() may run more than once in a process
    handler._layerstore_cli = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.ERROR)


def _setup_error_logging() -> None:
    _setup_logging(False)


def run() -> None:
    """The ``layerstore`` program (``python -m layerstore``): :func:`main` on
    ``sys.argv``, then the process exits at once with its status.

    The quick exit (``os._exit``) skips the interpreter's teardown, which frees every
    object one by one: 5 ms after listing 10,000 layers, an eighth of the call. By then
    main() has closed the store and every file it opened; the streams and logging are
    flushed here. When a flush fails, or a thread other than this one is still running
    (it may have work to finish), the normal exit runs instead."""
    code = main()
    try:
        if "logging" in sys.modules:
            import logging

            logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):  # a closed pipe or stream: the normal exit reports it
        sys.exit(code)
    threading = sys.modules.get("threading")
    if threading is not None:
        main_thread = threading.main_thread()
        if any(t is not main_thread and not t.daemon for t in threading.enumerate()):
            sys.exit(code)
    os._exit(code)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit code.

    As a console script the return value becomes the process's exit status.

    The cyclic garbage collector is off while the verb runs (and back on after): a
    short CLI call leaves little cyclic garbage, and on a big store the collections
    set off by its allocations would walk every loaded record again and again.
    """
    if not gc.isenabled():
        return _main(argv)
    gc.disable()
    try:
        return _main(argv)
    finally:
        gc.enable()


def _main(argv: Sequence[str] | None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        verb, opts, rest = _parse(args)
    except UsageError as e:
        if str(e) == "--help":
            _print_usage(e.verb, asked=True)
        elif e.to_stdout:
            if str(e):
                sys.stdout.write(str(e) + "\n")
            if e.verb is not None or not str(e):
                _print_usage(e.verb)
        else:
            sys.stderr.write(str(e) + "\n")
        return e.code
    ctx = Context(opts, rest, verb)
    debug = bool(opts.get("debug"))
    try:
        if debug or (verb.needs_store and "logging" in sys.modules):
            _setup_logging(debug)
        elif verb.needs_store:
            # Importing logging costs more than a short verb's work: set the format up
            # when the store first logs (or once a driver has imported logging anyway).
            from layerstore import store as store_module

            if _setup_error_logging not in store_module.logging_hooks:
                store_module.logging_hooks.append(_setup_error_logging)
        if debug:
            import logging

            log = logging.getLogger("layerstore.cli")
            log.debug("Root: %s", ctx.graph_root)
            log.debug("Run Root: %s", ctx.run_root)
            log.debug("Driver Name: %s", ctx.driver)
            log.debug("Driver Options: [%s]", " ".join(ctx.driver_options))
        if verb.needs_store:
            try:
                ctx.store  # noqa: B018 - open it now, as Go does before every verb
            except Exception as e:
                if debug:
                    raise
                print(f"error initializing: {error_text(e)}", flush=True)
                return 1
            if not debug and "logging" in sys.modules:
                _setup_error_logging()
        code = verb.action(ctx)
        sys.stdout.flush()
        return code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`layerstore layers | head`): exit quietly.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except Exception as e:
        # Verbs handle the errors they expect; anything else still gets one line.
        if debug:
            raise
        from layerstore.errors import LayerStoreError

        known = isinstance(e, LayerStoreError | OSError)
        ctx.error(
            f"{verb.name}: {error_text(e)}"
            if known
            else f"{verb.name}: internal error: "
            f"{error_text(e)} (run with --debug for the traceback)"
        )
        return 1
    finally:
        if ctx._store is not None:
            ctx._store.close()


if __name__ == "__main__":
    run()
