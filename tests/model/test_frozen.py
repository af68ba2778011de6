"""fast_init: the faster __init__ of the frozen values made on the dispatch path
behaves like the one dataclasses generates."""

from __future__ import annotations

import copy
import dataclasses
import inspect
import pickle
from dataclasses import InitVar, dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest

from nexus_schedd.engine.policies import Occurrence
from nexus_schedd.errors import InvalidSpec
from nexus_schedd.handlers.base import HandlerContext
from nexus_schedd.model import Job, JobResult, JobSpec, JobStatus, LastResult, Run
from nexus_schedd.model.frozen import fast_init

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Plain:
    a: int
    b: str = "b"
    c: dict[str, Any] = field(default_factory=dict)


@fast_init
@dataclass(frozen=True, slots=True)
class Fast:
    a: int
    b: str = "b"
    c: dict[str, Any] = field(default_factory=dict)


def test_the_same_values_defaults_and_factories_as_the_generated_init() -> None:
    for args, kwargs in [((1,), {}), ((1, "x"), {}), ((), {"a": 2, "c": {"k": 1}})]:
        assert dataclasses.astuple(Fast(*args, **kwargs)) == dataclasses.astuple(
            Plain(*args, **kwargs)
        )
    first, second = Fast(1), Fast(1)
    assert first.c == {} and first.c is not second.c  # a fresh dict each time
    assert first == second and first != Fast(2)


def test_instances_stay_frozen_and_arguments_are_checked() -> None:
    value = Fast(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        value.a = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        Fast()  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        Fast(1, d=2)  # type: ignore[call-arg]
    assert dataclasses.replace(value, b="y") == Fast(1, "y")


def test_classes_it_cannot_speed_up_are_refused() -> None:
    @dataclass(slots=True)
    class Mutable:
        a: int

    @dataclass(frozen=True, slots=True)
    class WithInitVar:
        a: int
        b: InitVar[int]

        def __post_init__(self, b: int) -> None:
            pass

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    for cls in (Mutable, WithInitVar, NoSlots):
        with pytest.raises(TypeError):
            fast_init(cls)


def test_post_init_still_checks_the_values() -> None:
    @fast_init
    @dataclass(frozen=True, slots=True)
    class Positive:
        a: int

        def __post_init__(self) -> None:
            if self.a <= 0:
                raise ValueError("a must be positive")

    assert Positive(1).a == 1
    with pytest.raises(ValueError, match="positive"):
        Positive(0)
    with pytest.raises(InvalidSpec, match="job_type"):
        JobSpec(job_type="")


@pytest.mark.parametrize(
    "cls",
    [Job, JobSpec, Run, LastResult, JobResult, Occurrence, HandlerContext],
    ids=lambda c: c.__name__,
)
def test_the_models_use_it(cls: type) -> None:
    init = cls.__init__
    assert init.__qualname__ == f"{cls.__qualname__}.__init__"
    assert init.__module__ == cls.__module__
    assert list(inspect.signature(cls).parameters) == [f.name for f in dataclasses.fields(cls)]
    assert any(name.startswith("_set_") for name in init.__code__.co_names)


def test_a_job_built_by_keyword_equals_one_built_positionally() -> None:
    job = Job("id", "noop", JobStatus.PENDING, NOW, NOW, NOW, NOW, NOW, payload={"k": 1})
    by_keyword = Job(**{f.name: getattr(job, f.name) for f in dataclasses.fields(Job)})
    assert job == by_keyword and job.max_retries == 3 and job.last_result is None


def test_an_instance_is_of_its_class_once_built_and_a_subclass_keeps_its_own() -> None:
    # The fields are set while the instance is of a twin class with the same
    # slots: nothing may see the twin afterwards.
    value = Fast(1, "x")
    assert type(value) is Fast and isinstance(value, Fast)
    assert dataclasses.fields(value)[0].name == "a" and value.__slots__ == Fast.__slots__

    @dataclass(frozen=True, slots=True)
    class Sub(Fast):
        d: int = 4

    sub = Sub(2, "y", {}, 5)  # another layout: filled through the slot descriptors
    assert type(sub) is Sub and (sub.a, sub.b, sub.c, sub.d) == (2, "y", {}, 5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        sub.a = 3  # type: ignore[misc]


def test_a_factory_that_raises_leaves_no_half_built_value() -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("no default")

    @fast_init
    @dataclass(frozen=True, slots=True)
    class WithFactory:
        a: int
        c: dict[str, Any] = field(default_factory=broken)

    with pytest.raises(RuntimeError, match="no default"):
        WithFactory(1)
    built = WithFactory(1, {"k": 1})
    assert type(built) is WithFactory and built.c == {"k": 1}


def test_a_class_with_a_base_or_a_weakref_slot_is_refused() -> None:
    @dataclass(frozen=True, slots=True)
    class Base:
        a: int

    @dataclass(frozen=True, slots=True)
    class Derived(Base):
        b: int

    @dataclass(frozen=True, slots=True, weakref_slot=True)
    class Weak:
        a: int

    for cls in (Derived, Weak):
        with pytest.raises(TypeError, match="only a class with slots and no base"):
            fast_init(cls)


def test_values_built_through_the_twin_copy_pickle_and_hash_like_any_other() -> None:
    job = Job("id", "noop", JobStatus.PENDING, NOW, NOW, NOW, NOW, NOW, payload={"k": 1})
    for clone in (pickle.loads(pickle.dumps(job)), copy.copy(job), copy.deepcopy(job)):
        assert type(clone) is Job and clone == job
    run = Run("r", "id", NOW, 1, NOW)
    assert hash(run) == hash(pickle.loads(pickle.dumps(run))) and {run: 1}[copy.copy(run)] == 1
