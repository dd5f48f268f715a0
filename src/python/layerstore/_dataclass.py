"""``dataclass(slots=True)`` (frozen or not) without importing :mod:`dataclasses`.

Importing :mod:`dataclasses` pulls in ``inspect``, ``ast``, ``dis`` and ``tokenize`` —
about 6 ms, a tenth of a short CLI call. The small immutable records on the CLI's path
(:class:`~layerstore.layer.Layer`, :class:`~layerstore.idtools.IDMap`, ...) are made by
this decorator instead. Modules write::

    if TYPE_CHECKING:
        from dataclasses import dataclass, field
    else:
        from layerstore._dataclass import dataclass, field

so type checkers see a real dataclass, while at run time the class gets the same
methods a slotted dataclass gets: ``__init__`` (every field by position or keyword,
defaults from the class body or ``field(default_factory=...)``), ``__repr__``,
``__eq__`` over the fields, ``__match_args__``, pickling and copying; frozen ones also
``__hash__`` over the fields and assignment and deletion raising
``dataclasses.FrozenInstanceError`` (others are unhashable, as dataclasses makes them).
``dataclasses.fields``, ``replace``, ``asdict`` and ``is_dataclass`` work too:
``__dataclass_fields__`` is built (importing :mod:`dataclasses`) the first time
something asks for it.

Only what those records use is supported: defaults and default factories (no other
``field()`` options), no inheritance between records, no ``__post_init__``.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, TypeVar

    _T = TypeVar("_T")

__all__ = ["dataclass", "field"]


class _Factory:
    """A default made per instance: what :func:`field` returns."""

    __slots__ = ("make",)

    def __init__(self, make: Callable[[], Any]) -> None:
        self.make = make


def field(*, default_factory: Callable[[], Any]) -> Any:
    """``dataclasses.field(default_factory=...)`` (the only option supported)."""
    return _Factory(default_factory)


def dataclass(*, slots: bool, frozen: bool = False) -> Callable[[type[_T]], type[_T]]:
    """The decorator; only slotted records (``slots=True``) are implemented."""
    if not slots:
        raise NotImplementedError("only slotted records are supported")
    return lambda cls: _make(cls, frozen)


def _make(cls: type[_T], frozen: bool) -> type[_T]:
    # (inspect.get_annotations would import inspect, the very thing avoided here)
    names = tuple(cls.__dict__.get("__annotations__", {}))  # noqa: RUF063
    body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    defaults = {n: body.pop(n) for n in names if n in body}
    body["__slots__"] = names
    body["__match_args__"] = names
    body["__dataclass_fields__"] = _LazyFields()
    # __init__ is generated code (as dataclasses does): one plain function, no *args.
    params = []
    lines = []
    env: dict[str, Any] = {"_setattr": object.__setattr__, "_unset": _Factory}
    for i, name in enumerate(names):
        default = defaults.get(name, _Factory)
        if isinstance(default, _Factory):  # made per call, as dataclasses does
            env[f"_f{i}"] = default.make
            params.append(f"{name}=_unset")
            lines.append(f"  if {name} is _unset: {name} = _f{i}()")
        elif name in defaults:
            env[f"_d{i}"] = default
            params.append(f"{name}=_d{i}")
        elif params and "=" in params[-1]:
            raise TypeError(f"non-default argument {name!r} follows default argument")
        else:
            params.append(name)
    lines += [f"  _setattr(self, {n!r}, {n})" for n in names]
    lines = lines or ["  pass"]
    source = f"def __init__(self, {', '.join(params)}):\n" + "\n".join(lines) + "\n"
    exec(source, env)  # the source is built from the class's own field names
    init = env["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    body.setdefault("__init__", init)
    body.setdefault("__repr__", _repr)
    body.setdefault("__eq__", _eq)
    body["__reduce__"] = _reduce
    if frozen:
        body["__hash__"] = _hash
        body["__setattr__"] = _setattr
        body["__delattr__"] = _delattr
    else:
        body["__hash__"] = None  # eq without frozen: unhashable, as with dataclasses
    metaclass: Any = type(cls)
    new_cls: type[_T] = metaclass(cls.__name__, cls.__bases__, body)
    new_cls.__qualname__ = cls.__qualname__
    type.__setattr__(new_cls, "_defaults", defaults)
    type.__setattr__(new_cls, "_frozen", frozen)
    return new_cls


def _values(self: Any) -> tuple[Any, ...]:
    return tuple([getattr(self, name) for name in self.__match_args__])


def _repr(self: Any) -> str:
    fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__match_args__)
    return f"{type(self).__qualname__}({fields})"


def _eq(self: Any, other: object) -> Any:
    if other.__class__ is self.__class__:
        return _values(self) == _values(other)
    return NotImplemented


def _hash(self: Any) -> int:
    return hash(_values(self))


def _frozen_error(text: str) -> Exception:
    from dataclasses import FrozenInstanceError  # only on the error path

    return FrozenInstanceError(text)


def _setattr(self: Any, name: str, value: object) -> None:
    raise _frozen_error(f"cannot assign to field {name!r}")


def _delattr(self: Any, name: str) -> None:
    raise _frozen_error(f"cannot delete field {name!r}")


def _reduce(self: Any) -> tuple[type, tuple[Any, ...]]:
    return type(self), _values(self)


def _constant(value: object) -> Callable[[], object]:
    return lambda: value


class _LazyFields:
    """``__dataclass_fields__``, made on first access from a real dataclass twin."""

    def __get__(self, obj: object, cls: type) -> dict[str, Any]:
        import dataclasses

        defaults = cls._defaults  # type: ignore[attr-defined]
        specs: list[tuple[str, Any] | tuple[str, Any, Any]] = []
        for name in cls.__match_args__:  # type: ignore[attr-defined]
            annotation = cls.__annotations__[name]
            if name in defaults:
                default = defaults[name]
                if isinstance(default, _Factory):
                    spec: Any = dataclasses.field(default_factory=default.make)
                elif type(default).__hash__ is None:  # a read-only mapping, say
                    spec = dataclasses.field(default_factory=_constant(default))
                else:
                    spec = dataclasses.field(default=default)
                specs.append((name, annotation, spec))
            else:
                specs.append((name, annotation))
        frozen = cls._frozen  # type: ignore[attr-defined]
        twin = dataclasses.make_dataclass(cls.__name__, specs, frozen=frozen)
        fields: dict[str, Any] = twin.__dataclass_fields__  # type: ignore[attr-defined]
        type.__setattr__(cls, "__dataclass_fields__", fields)
        type.__setattr__(cls, "__dataclass_params__", twin.__dataclass_params__)  # type: ignore[attr-defined]
        return fields
