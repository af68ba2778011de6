"""Varlink, the wire protocol of the control socket: IDL parsing, parameter
checking and message framing.

A Varlink message is one JSON object followed by a NUL byte. Interfaces are
described in IDL files shipped next to this module; :func:`load_interface`
parses one into an :class:`Interface`, and :meth:`Interface.check_parameters`
checks a call against it, so the IDL stays the one source of method and type
names. See https://varlink.org/Interface-Definition.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

SERVICE_INTERFACE = "org.varlink.service"

# The standard errors of org.varlink.service.
INTERFACE_NOT_FOUND = f"{SERVICE_INTERFACE}.InterfaceNotFound"
METHOD_NOT_FOUND = f"{SERVICE_INTERFACE}.MethodNotFound"
METHOD_NOT_IMPLEMENTED = f"{SERVICE_INTERFACE}.MethodNotImplemented"
INVALID_PARAMETER = f"{SERVICE_INTERFACE}.InvalidParameter"
PERMISSION_DENIED = f"{SERVICE_INTERFACE}.PermissionDenied"
EXPECTED_MORE = f"{SERVICE_INTERFACE}.ExpectedMore"

_TOKEN = re.compile(r"\[string\]|\[\]|->|[?(),:]|[A-Za-z][A-Za-z0-9_.\-]*")
_MEMBER_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
_FIELD_NAME = re.compile(r"^[A-Za-z](?:_?[A-Za-z0-9])*$")
_INTERFACE_NAME = re.compile(r"^[A-Za-z](?:-*[A-Za-z0-9])*(?:\.[A-Za-z0-9](?:-*[A-Za-z0-9])*)+$")
_BUILTINS = frozenset({"bool", "int", "float", "string", "object"})


class IDLSyntaxError(ValueError):
    """An interface description that does not follow the Varlink grammar."""


class ParameterError(ValueError):
    """A call's parameters do not match the IDL; ``parameter`` names the offending one."""

    def __init__(self, parameter: str, reason: str) -> None:
        super().__init__(f"{parameter}: {reason}")
        self.parameter = parameter
        self.reason = reason


# -- the type model -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Builtin:
    """bool, int, float, string, or object (any JSON value)."""

    name: str


@dataclass(frozen=True, slots=True)
class Maybe:
    """``?T``: the value may be null or left out."""

    inner: VarlinkType


@dataclass(frozen=True, slots=True)
class Array:
    """``[]T``."""

    inner: VarlinkType


@dataclass(frozen=True, slots=True)
class Map:
    """``[string]T``; ``inner`` is None for the set form ``[string]()``."""

    inner: VarlinkType | None


@dataclass(frozen=True, slots=True)
class Struct:
    """``(name: T, ...)``."""

    fields: tuple[tuple[str, VarlinkType], ...]


@dataclass(frozen=True, slots=True)
class Enum:
    """``(a, b, c)``."""

    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Named:
    """A reference to a ``type`` declared in the interface."""

    name: str


VarlinkType = Builtin | Maybe | Array | Map | Struct | Enum | Named


@dataclass(frozen=True, slots=True)
class Method:
    """One ``method Name(in) -> (out)``."""

    name: str
    parameters: Struct
    returns: Struct


@dataclass(frozen=True, slots=True)
class Interface:
    """A parsed interface: its name, types, methods and errors, and its IDL text."""

    name: str
    description: str
    types: Mapping[str, VarlinkType]
    methods: Mapping[str, Method]
    errors: Mapping[str, Struct]
    _fits: dict[int, _Fits] = field(default_factory=dict, compare=False, repr=False)
    """Compiled checks by ``id`` of the type they check (see :meth:`_fit`)."""

    def method(self, name: str) -> Method | None:
        """The method with this short name, or None."""
        return self.methods.get(name)

    def check_parameters(self, method: str, parameters: Any) -> None:
        """Raise :class:`ParameterError` unless ``parameters`` fit the method's input."""
        kind = self.methods[method].parameters
        # A batch of 1,000 jobs is 15,000 field checks: a compiled yes/no check
        # first, and the walk that names the offending field only when it says no.
        if not self._fit(kind)(parameters):
            self._check(parameters, kind, "")
            raise ParameterError("parameters", "do not match the interface")

    def check_returns(self, method: str, parameters: Any) -> None:
        """Raise :class:`ParameterError` unless ``parameters`` fit the method's output."""
        self._check(parameters, self.methods[method].returns, "")

    def check_error(self, error: str, parameters: Any) -> None:
        """Raise :class:`ParameterError` unless ``parameters`` fit the error's fields."""
        self._check(parameters, self.errors[error], "")

    def _check(self, value: Any, kind: VarlinkType, path: str) -> None:
        label = path or "parameters"
        if isinstance(kind, Named):
            self._check(value, self.types[kind.name], path)
        elif isinstance(kind, Maybe):
            if value is not None:
                self._check(value, kind.inner, path)
        elif value is None:
            raise ParameterError(label, "is required")
        elif isinstance(kind, Builtin):
            _check_builtin(value, kind.name, label)
        elif isinstance(kind, Enum):
            if not isinstance(value, str) or value not in kind.values:
                raise ParameterError(label, f"must be one of {', '.join(kind.values)}")
        elif isinstance(kind, Array):
            if not isinstance(value, list):
                raise ParameterError(label, "must be an array")
            for index, item in enumerate(value):
                self._check(item, kind.inner, f"{path}[{index}]")
        elif isinstance(kind, Map):
            if not isinstance(value, dict):
                raise ParameterError(label, "must be an object (a map)")
            if kind.inner is not None:
                for key, item in value.items():
                    self._check(item, kind.inner, f"{path}[{key}]")
        else:
            self._check_struct(value, kind, path)

    def _fit(self, kind: VarlinkType) -> _Fits:
        """A function telling whether a value fits ``kind``: the same rules as
        :meth:`_check`, without building a path for every field."""
        fits = self._fits.get(id(kind))
        if fits is None:
            fits = self._fits[id(kind)] = self._compile(kind)
        return fits

    def _compile(self, kind: VarlinkType) -> _Fits:
        if isinstance(kind, Named):
            types, name = self.types, kind.name
            # Resolved on first use, so a recursive type compiles.
            return lambda value: self._fit(types[name])(value)
        if isinstance(kind, Maybe):
            inner = self._fit(kind.inner)
            return lambda value: value is None or inner(value)
        if isinstance(kind, Builtin):
            return _BUILTIN_FITS[kind.name]
        if isinstance(kind, Enum):
            values = frozenset(kind.values)
            return lambda value: isinstance(value, str) and value in values
        if isinstance(kind, Array):
            item = self._fit(kind.inner)
            return lambda value: isinstance(value, list) and all(map(item, value))
        if isinstance(kind, Map):
            if kind.inner is None:
                return lambda value: isinstance(value, dict)
            entry = self._fit(kind.inner)
            return lambda value: isinstance(value, dict) and all(map(entry, value.values()))
        fields = {name: self._fit(field_type) for name, field_type in kind.fields}
        known = fields.keys()
        # A field left out is null, which fits exactly the optional (?T) ones: so
        # the required must be there, and only the fields given need a check
        # (a job spec names a few of its twenty).
        required = frozenset(
            name for name, field_type in kind.fields if not isinstance(field_type, Maybe)
        )

        def struct(value: Any) -> bool:
            if not isinstance(value, dict):
                return False
            keys = value.keys()
            if not (keys <= known and required <= keys):
                return False
            return all(fields[name](item) for name, item in value.items())

        return struct

    def _check_struct(self, value: Any, kind: Struct, path: str) -> None:
        if not isinstance(value, dict):
            raise ParameterError(path or "parameters", "must be an object")
        known = dict(kind.fields)
        for key in value:
            if key not in known:
                raise ParameterError(_join(path, str(key)), "is not a known field")
        for name, field_type in kind.fields:
            self._check(value.get(name), field_type, _join(path, name))


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


_Fits = Callable[[Any], bool]

_BUILTIN_FITS: dict[str, _Fits] = {
    # None never fits a builtin: only ``?T`` admits null.
    "bool": lambda value: isinstance(value, bool),
    "int": lambda value: isinstance(value, int) and not isinstance(value, bool),
    "float": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
    "string": lambda value: isinstance(value, str),
    "object": lambda value: value is not None,
}


def _check_builtin(value: Any, name: str, label: str) -> None:
    if name == "bool":
        ok = isinstance(value, bool)
    elif name == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif name == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif name == "string":
        ok = isinstance(value, str)
    else:  # object: any JSON value
        ok = True
    if not ok:
        raise ParameterError(label, f"must be of type {name}")


# -- the IDL parser ---------------------------------------------------------------


class _Tokens:
    def __init__(self, text: str) -> None:
        body = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        self.items: list[str] = []
        position = 0
        for match in _TOKEN.finditer(body):
            skipped = body[position : match.start()]
            if skipped.strip():
                raise IDLSyntaxError(f"unexpected {skipped.strip()!r}")
            self.items.append(match.group(0))
            position = match.end()
        if body[position:].strip():
            raise IDLSyntaxError(f"unexpected {body[position:].strip()!r}")
        self.index = 0

    def peek(self) -> str | None:
        return self.items[self.index] if self.index < len(self.items) else None

    def take(self) -> str:
        token = self.peek()
        if token is None:
            raise IDLSyntaxError("unexpected end of the interface description")
        self.index += 1
        return token

    def expect(self, expected: str) -> None:
        token = self.take()
        if token != expected:
            raise IDLSyntaxError(f"expected {expected!r}, got {token!r}")

    def accept(self, expected: str) -> bool:
        if self.peek() == expected:
            self.index += 1
            return True
        return False


def parse_interface(text: str) -> Interface:
    """Parse a Varlink interface description; raise :class:`IDLSyntaxError` if invalid."""
    tokens = _Tokens(text)
    tokens.expect("interface")
    name = tokens.take()
    if not _INTERFACE_NAME.match(name):
        raise IDLSyntaxError(f"bad interface name {name!r}")
    types: dict[str, VarlinkType] = {}
    methods: dict[str, Method] = {}
    errors: dict[str, Struct] = {}
    seen: set[str] = set()
    while tokens.peek() is not None:
        keyword = tokens.take()
        member = tokens.take()
        if not _MEMBER_NAME.match(member):
            raise IDLSyntaxError(f"bad member name {member!r}")
        if member in seen:
            raise IDLSyntaxError(f"{member} is declared twice")
        seen.add(member)
        if keyword == "type":
            types[member] = _parse_type(tokens)
        elif keyword == "method":
            parameters = _parse_struct_or_enum(tokens)
            tokens.expect("->")
            returns = _parse_struct_or_enum(tokens)
            if not isinstance(parameters, Struct) or not isinstance(returns, Struct):
                raise IDLSyntaxError(f"method {member} needs struct parameters and returns")
            methods[member] = Method(member, parameters, returns)
        elif keyword == "error":
            fields = _parse_struct_or_enum(tokens)
            if not isinstance(fields, Struct):
                raise IDLSyntaxError(f"error {member} needs struct fields")
            errors[member] = fields
        else:
            raise IDLSyntaxError(f"expected type, method or error, got {keyword!r}")
    interface = Interface(name, text, types, methods, errors)
    _check_references(interface)
    return interface


def _parse_type(tokens: _Tokens, *, after_maybe: bool = False) -> VarlinkType:
    token = tokens.peek()
    if token == "?":
        if after_maybe:
            raise IDLSyntaxError("'??' is not a type")
        tokens.take()
        return Maybe(_parse_type(tokens, after_maybe=True))
    if token == "[]":
        tokens.take()
        return Array(_parse_type(tokens))
    if token == "[string]":
        tokens.take()
        if tokens.peek() == "(" and tokens.items[tokens.index + 1 : tokens.index + 2] == [")"]:
            tokens.index += 2
            return Map(None)
        return Map(_parse_type(tokens))
    if token == "(":
        return _parse_struct_or_enum(tokens)
    name = tokens.take()
    if name in _BUILTINS:
        return Builtin(name)
    if _MEMBER_NAME.match(name):
        return Named(name)
    raise IDLSyntaxError(f"unknown type {name!r}")


def _parse_struct_or_enum(tokens: _Tokens) -> Struct | Enum:
    tokens.expect("(")
    fields: list[tuple[str, VarlinkType]] = []
    values: list[str] = []
    while not tokens.accept(")"):
        if fields or values:
            tokens.expect(",")
        name = tokens.take()
        if not _FIELD_NAME.match(name):
            raise IDLSyntaxError(f"bad field name {name!r}")
        if tokens.accept(":"):
            if values:
                raise IDLSyntaxError("an enum cannot have typed fields")
            fields.append((name, _parse_type(tokens)))
        else:
            if fields:
                raise IDLSyntaxError(f"field {name!r} needs a type")
            values.append(name)
    names = [name for name, _ in fields] + values
    if len(set(names)) != len(names):
        raise IDLSyntaxError(f"duplicate field in ({', '.join(names)})")
    return Enum(tuple(values)) if values else Struct(tuple(fields))


def _check_references(interface: Interface) -> None:
    def walk(kind: VarlinkType | None) -> None:
        if isinstance(kind, Named):
            if kind.name not in interface.types:
                raise IDLSyntaxError(f"type {kind.name} is not declared")
        elif isinstance(kind, Maybe | Array | Map):
            walk(kind.inner)
        elif isinstance(kind, Struct):
            for _, field_type in kind.fields:
                walk(field_type)

    for kind in interface.types.values():
        walk(kind)
    for method in interface.methods.values():
        walk(method.parameters)
        walk(method.returns)
    for fields in interface.errors.values():
        walk(fields)


def load_interface(name: str) -> Interface:
    """Parse the IDL file ``<name>.varlink`` shipped in this package."""
    text = resources.files(__package__).joinpath(f"{name}.varlink").read_text("utf-8")
    interface = parse_interface(text)
    if interface.name != name:
        raise IDLSyntaxError(f"{name}.varlink declares interface {interface.name}")
    return interface


# -- messages ---------------------------------------------------------------------


def encode_message(message: Mapping[str, Any]) -> bytes:
    """One NUL-terminated JSON message."""
    return _encode_message(message).encode() + b"\0"


# Built once: json.dumps with options builds a new encoder for every message.
_encode_message = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def reply(parameters: Mapping[str, Any], *, continues: bool = False) -> dict[str, Any]:
    """A method reply (``continues`` for all but the last reply of a ``more`` call)."""
    message: dict[str, Any] = {"parameters": dict(parameters)}
    if continues:
        message["continues"] = True
    return message


def error_reply(error: str, parameters: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """An error reply."""
    return {"error": error, "parameters": dict(parameters or {})}


def decode_message(raw: bytes) -> Any:
    """The JSON value of one message (without its NUL); raise ValueError if it is not JSON."""
    try:
        return json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
