"""A faster ``__init__`` for the frozen slots dataclasses made on the dispatch path.

A frozen dataclass's ``__init__`` sets each field with ``object.__setattr__``,
which looks the field's slot up by name each time: 2 to 3 us for a :class:`Job`'s
25 fields, against 0.6 us for a mutable dataclass. The engine makes about six
such values per run (two job versions, two run records, a last result, a handler
context), and an add makes a spec and a job.

:func:`fast_init` gives the class an ``__init__`` with the same signature and
defaults that fills the fields the way a mutable class does: the new instance
is switched to a *twin* class (a plain class with the very same slots, so the
same memory layout), its fields are set with ordinary attribute stores, and it
is switched back before ``__post_init__`` runs. Nobody can see the twin: the
instance is unreachable until ``__init__`` returns, and it returns as an
instance of the class, frozen as before. About a third of the generated
``__init__``'s time (``benchmarks`` round 6). Instances of a subclass (another
layout) are filled through each slot's descriptor instead, about half the
generated ``__init__``'s time.
"""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any, TypeVar

_T = TypeVar("_T", bound=type)


class _Factory:
    """The default of a parameter whose field has a ``default_factory``."""


def fast_init(cls: _T) -> _T:
    """Replace the ``__init__`` of ``cls`` (a frozen slots dataclass without
    keyword-only or ``InitVar`` fields; its ``__post_init__``, if any, is called
    last as before); apply it above ``@dataclass``."""
    params = getattr(cls, "__dataclass_params__", None)
    if not is_dataclass(cls) or params is None or not params.frozen:
        raise TypeError(f"{cls.__name__} is not a frozen dataclass")
    if "__slots__" not in cls.__dict__:
        raise TypeError(f"{cls.__name__} has no slots")
    if len(fields(cls)) != len(cls.__dataclass_fields__):
        raise TypeError(f"{cls.__name__}: InitVar and ClassVar fields are not supported")
    namespace: dict[str, Any] = {
        "_FACTORY": _Factory,
        "_CLS": cls,
        "_TWIN": _twin(cls),
        "_set_class": object.__setattr__,
    }
    signature: list[str] = []
    twin_body: list[str] = []
    slot_body: list[str] = []
    for field in fields(cls):
        name = field.name
        if field.kw_only is True or not field.init:
            raise TypeError(f"{cls.__name__}.{name}: keyword-only and init=False are not supported")
        namespace[f"_set_{name}"] = cls.__dict__[name].__set__
        value = name
        if field.default is not MISSING:
            namespace[f"_default_{name}"] = field.default
            signature.append(f"{name}=_default_{name}")
        elif field.default_factory is not MISSING:
            namespace[f"_factory_{name}"] = field.default_factory
            signature.append(f"{name}=_FACTORY")
            value = f"_factory_{name}() if {name} is _FACTORY else {name}"
        else:
            signature.append(name)
        twin_body.append(f"        self.{name} = {value}")
        slot_body.append(f"        _set_{name}(self, {value})")
    body = ["    if type(self) is _CLS:", '        _set_class(self, "__class__", _TWIN)']
    body += [*twin_body, "        self.__class__ = _CLS", "    else:", *slot_body]
    if hasattr(cls, "__post_init__"):
        body.append("    self.__post_init__()")
    source = f"def __init__(self, {', '.join(signature)}):\n" + "\n".join(body) + "\n"
    exec(source, namespace)  # the technique dataclasses itself uses for __init__
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{f.name: f.type for f in fields(cls)}, "return": None}
    setattr(cls, "__init__", init)  # noqa: B010 (mypy rejects assigning a method)
    return cls


def _twin(cls: type) -> type:
    """A mutable class with the slots of ``cls`` and nothing else: an instance of
    ``cls`` may become one and back (CPython allows ``__class__`` assignment
    between classes of the same layout) while its fields are set."""
    if cls.__bases__ != (object,) or cls.__dictoffset__ or cls.__weakrefoffset__:
        raise TypeError(f"{cls.__name__}: only a class with slots and no base is supported")
    slots = cls.__dict__["__slots__"]
    return type(f"_{cls.__name__}Fields", (), {"__slots__": slots, "__module__": cls.__module__})
