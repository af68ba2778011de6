"""The IDL parser, parameter checking and message encoding."""

from __future__ import annotations

from importlib import resources

import pytest
import varlink
from hypothesis import given, settings
from hypothesis import strategies as st

from nexus_schedd.control.varlink import (
    Array,
    Builtin,
    Enum,
    IDLSyntaxError,
    Interface,
    Map,
    Maybe,
    Named,
    ParameterError,
    Struct,
    decode_message,
    encode_message,
    error_reply,
    load_interface,
    parse_interface,
    reply,
)

SPEC_METHODS = {
    "GetStatus",
    "AddJob",
    "AddJobs",
    "GetJob",
    "ListJobs",
    "CancelJob",
    "PauseJob",
    "ResumeJob",
    "TriggerJob",
    "RescheduleJob",
    "RequeueJob",
    "RequeueJobs",
    "BackfillJob",
    "ListRuns",
    "Preview",
    "Watch",
    "ListHandlers",
    "Reload",
    "ExportCalendar",
}
SPEC_ERRORS = {
    "JobNotFound",
    "InvalidJobState",
    "InvalidSpec",
    "UnknownJobType",
    "JobExists",
    "PermissionDenied",
}


def _idl_text(name: str) -> str:
    return resources.files("nexus_schedd.control").joinpath(f"{name}.varlink").read_text()


def test_scheduler_idl_declares_every_spec_method_and_error() -> None:
    interface = load_interface("io.nexus.Scheduler")
    assert set(interface.methods) == SPEC_METHODS
    assert set(interface.errors) >= SPEC_ERRORS
    assert interface.errors["InvalidSpec"] == Struct(
        (("field", Builtin("string")), ("reason", Builtin("string")))
    )


def test_the_third_party_varlink_parser_accepts_both_idl_files() -> None:
    for name in ("io.nexus.Scheduler", "org.varlink.service"):
        parsed = varlink.Interface(_idl_text(name))
        assert parsed.name == name
    scheduler = varlink.Interface(_idl_text("io.nexus.Scheduler"))
    assert set(scheduler.members) >= SPEC_METHODS


def test_parser_reads_every_type_form() -> None:
    interface = parse_interface(
        """
        # doc
        interface org.example.Forms
        type Color (red, green)
        type Thing (
          a: ?int, b: []string, c: [string]float, d: [string](), e: object,
          f: (x: bool, y: ?[]Color), g: ?Color
        )
        method Do(thing: Thing) -> (ok: bool)
        error Bad (why: string)
        """
    )
    assert interface.types["Color"] == Enum(("red", "green"))
    thing = interface.types["Thing"]
    assert isinstance(thing, Struct)
    fields = dict(thing.fields)
    assert fields["a"] == Maybe(Builtin("int"))
    assert fields["b"] == Array(Builtin("string"))
    assert fields["c"] == Map(Builtin("float"))
    assert fields["d"] == Map(None)
    assert fields["e"] == Builtin("object")
    assert fields["f"] == Struct((("x", Builtin("bool")), ("y", Maybe(Array(Named("Color"))))))


@pytest.mark.parametrize(
    "text",
    [
        "interface bad",
        "interface org.example.X\nmethod lower() -> ()",
        "interface org.example.X\ntype T (a: Missing)",
        "interface org.example.X\ntype T (a: int, b)",
        "interface org.example.X\ntype T (a, b: int)",
        "interface org.example.X\ntype T (a: ??int)",
        "interface org.example.X\ntype T (a: int, a: int)",
        "interface org.example.X\nmethod M() -> ()\nmethod M() -> ()",
        "interface org.example.X\nmethod M(a: int)",
        "interface org.example.X\nfrobnicate M ()",
        "interface org.example.X\ntype T (a: int) $",
    ],
)
def test_parser_rejects_invalid_descriptions(text: str) -> None:
    with pytest.raises(IDLSyntaxError):
        parse_interface(text)


@pytest.mark.parametrize(
    ("parameters", "offending"),
    [
        ({}, "job"),
        ({"job": {}}, "job.job_type"),
        ({"job": {"job_type": 5}}, "job.job_type"),
        ({"job": {"job_type": "log"}, "extra": 1}, "extra"),
        ({"job": {"job_type": "log", "colour": "red"}}, "job.colour"),
        ({"job": {"job_type": "log", "priority": 1.5}}, "job.priority"),
        ({"job": {"job_type": "log", "priority": True}}, "job.priority"),
        ({"job": {"job_type": "log", "misfire": "sometimes"}}, "job.misfire"),
        ({"job": {"job_type": "log", "recurrence": {"interval": 2}}}, "job.recurrence.kind"),
        ({"job": {"job_type": "log", "recurrence": []}}, "job.recurrence"),
        ({"job": "log"}, "job"),
    ],
)
def test_check_parameters_names_the_offending_parameter(
    parameters: dict[str, object], offending: str
) -> None:
    interface = load_interface("io.nexus.Scheduler")
    with pytest.raises(ParameterError) as caught:
        interface.check_parameters("AddJob", parameters)
    assert caught.value.parameter == offending


def test_check_parameters_accepts_nulls_for_optional_fields_and_any_json_for_object() -> None:
    interface = load_interface("io.nexus.Scheduler")
    interface.check_parameters(
        "AddJob",
        {"job": {"job_type": "log", "name": None, "payload": {"deep": [1, {"x": None}]}}},
    )
    interface.check_parameters("ListJobs", {"status": ["pending", "paused"], "limit": 5})
    with pytest.raises(ParameterError) as caught:
        interface.check_parameters("ListJobs", {"status": ["pending", "sleeping"]})
    assert caught.value.parameter == "status[1]"
    interface.check_parameters("Preview", {"recurrence": {"kind": "daily"}, "count": 3})


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)


def _value_for(interface: Interface, kind: object, depth: int = 0) -> st.SearchStrategy[object]:
    """Values that mostly fit ``kind`` and sometimes do not, one field at a time."""
    if isinstance(kind, Named):
        return _value_for(interface, interface.types[kind.name], depth)
    if isinstance(kind, Maybe):
        return st.none() | _value_for(interface, kind.inner, depth)
    if isinstance(kind, Enum):
        return st.sampled_from([*kind.values, "nope", 1])
    if isinstance(kind, Array) and depth < 3:
        return st.lists(_value_for(interface, kind.inner, depth + 1), max_size=3) | _JSON
    if isinstance(kind, Struct) and depth < 3:
        fields = {name: _value_for(interface, t, depth + 1) for name, t in kind.fields}
        return st.fixed_dictionaries({}, optional=fields | {"unknown": _JSON}) | _JSON
    if isinstance(kind, Builtin):
        right, confusable = {
            "bool": (st.booleans(), st.integers(0, 1)),
            "int": (st.integers(), st.booleans() | st.floats(allow_nan=False)),
            "float": (st.floats(allow_nan=False) | st.integers(), st.booleans()),
            "string": (st.text(max_size=5), st.integers() | st.none()),
            "object": (_JSON, st.none()),
        }[kind.name]
        return right | right | confusable
    return _JSON


@settings(max_examples=400, deadline=None)
@given(
    data=st.data(),
    method=st.sampled_from(["AddJob", "AddJobs", "ListJobs", "Preview", "RescheduleJob"]),
)
def test_compiled_check_agrees_with_the_walk_that_names_the_field(
    data: st.DataObject, method: str
) -> None:
    """check_parameters answers from a compiled yes/no check and walks the value
    only to name the offending field: the two must agree on every value."""
    interface = load_interface("io.nexus.Scheduler")
    kind = interface.methods[method].parameters
    parameters = data.draw(_value_for(interface, kind))
    try:
        interface._check(parameters, kind, "")
    except ParameterError:
        walk_accepts = False
    else:
        walk_accepts = True
    assert interface._fit(kind)(parameters) is walk_accepts


def test_messages_are_nul_terminated_json() -> None:
    encoded = encode_message(reply({"a": 1}, continues=True))
    assert encoded.endswith(b"\0") and encoded.count(b"\0") == 1
    assert decode_message(encoded[:-1]) == {"parameters": {"a": 1}, "continues": True}
    assert error_reply("x.Y") == {"error": "x.Y", "parameters": {}}
    with pytest.raises(ValueError):
        decode_message(b"\xff\xfe")
    with pytest.raises(ValueError):
        decode_message(b"[" * 100_000)
