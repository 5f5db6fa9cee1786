"""The override engine: strict ``key=value`` edits of the pipeline proto's fields.

A key is a dotted path of proto fields; a value is parsed as the protobuf text format parses
the field's type. A key that names no field, a value of the wrong type, or an edit that would
switch a ``oneof`` is a :class:`~tfod.config.ConfigError` naming the key, and nothing changes.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from google.protobuf import descriptor, text_format
from google.protobuf.message import Message

from tfod import compat  # fixes the stack; must precede the OD API imports

# isort: split
from object_detection.utils import config_util

from tfod.config import ConfigError

_PIPELINE_ALIASES = {  # config_util's dict keys -> the pipeline proto's field names
    "train_input_config": "train_input_reader",
    "eval_input_config": "eval_input_reader",
    "eval_input_configs": "eval_input_reader",
    "graph_rewriter_config": "graph_rewriter",
}
_PART = re.compile(r"^([A-Za-z_]\w*)(?:\[(\d+)\])?$")


def parse_override(text: str) -> tuple[str, str]:
    """'a.b.c=value' -> ('a.b.c', 'value')."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r}: expected key=value")
    return key.strip(), value.strip()


def apply_overrides(target, overrides: Iterable):
    """Set dotted fields of the pipeline proto, strictly; returns ``target`` edited in place.

    ``target`` is a ``TrainEvalPipelineConfig`` or ``config_util``'s configs dict. Each
    override is ``"key=value"`` or a ``(key, value)`` pair. Keys are paths of proto fields
    from the pipeline (``train_config.optimizer.momentum_optimizer.momentum_optimizer_value``);
    ``name[i]`` picks an element of a repeated message, and a repeated message without index
    is set in every element. A repeated scalar takes a comma-separated list. A key that names
    no field, a value of the wrong type, or a key that would switch a ``oneof`` to another
    branch is a :class:`ConfigError` naming the key, and then nothing is changed.
    """
    pipeline = (config_util.create_pipeline_proto_from_configs(target)
                if isinstance(target, Mapping) else _copy(target))
    for override in overrides:
        key, value = parse_override(override) if isinstance(override, str) else override
        _apply_override(pipeline, key, value)
    if isinstance(target, Mapping):
        target.clear()
        target.update(config_util.create_configs_from_pipeline_proto(pipeline))
    else:
        target.CopyFrom(pipeline)
    return target


def _copy(message: Message) -> Message:
    copy = type(message)()
    copy.CopyFrom(message)
    return copy


def _apply_override(pipeline: Message, key: str, value) -> None:
    parts = key.split(".")
    head = _PART.match(parts[0])
    if head and head.group(1) in _PIPELINE_ALIASES:
        parts[0] = _PIPELINE_ALIASES[head.group(1)] + parts[0][len(head.group(1)):]
    messages = [pipeline]
    for depth, part in enumerate(parts):
        match = _PART.match(part)
        if not match:
            raise ConfigError(f"override {key!r}: {part!r} is not a field name")
        name, index = match.group(1), match.group(2)
        last = depth == len(parts) - 1
        next_messages = []
        for message in messages:
            field = _field(message, name, key)
            if last:
                _set_field(message, field, index, value, key)
            else:
                next_messages.extend(_descend(message, field, index, key))
        messages = next_messages


def _field(message: Message, name: str, key: str) -> descriptor.FieldDescriptor:
    field = message.DESCRIPTOR.fields_by_name.get(name)
    if field is None:
        known = ", ".join(sorted(message.DESCRIPTOR.fields_by_name))
        raise ConfigError(
            f"override {key!r}: {message.DESCRIPTOR.full_name} has no field {name!r} "
            f"(its fields: {known})"
        )
    return field


def _descend(message: Message, field, index, key: str) -> list[Message]:
    if field.cpp_type != descriptor.FieldDescriptor.CPPTYPE_MESSAGE:
        raise ConfigError(f"override {key!r}: {field.full_name} is not a message")
    if compat.is_repeated(field):
        items = getattr(message, field.name)
        if index is None:
            if not items:
                raise ConfigError(f"override {key!r}: {field.full_name} has no elements")
            return list(items)
        if int(index) >= len(items):
            raise ConfigError(
                f"override {key!r}: {field.full_name} has {len(items)} elements, "
                f"no [{index}]"
            )
        return [items[int(index)]]
    if index is not None:
        raise ConfigError(f"override {key!r}: {field.full_name} is not repeated")
    _check_oneof(message, field, key)
    return [getattr(message, field.name)]


def _check_oneof(message: Message, field, key: str) -> None:
    oneof = field.containing_oneof
    if oneof is None:
        return
    current = message.WhichOneof(oneof.name)
    if current is not None and current != field.name:
        raise ConfigError(
            f"override {key!r}: {message.DESCRIPTOR.full_name}.{oneof.name} is {current!r}; "
            f"setting {field.name!r} would replace it. Switch it in a base config instead."
        )


def _set_field(message: Message, field, index, value, key: str) -> None:
    if field.cpp_type == descriptor.FieldDescriptor.CPPTYPE_MESSAGE:
        raise ConfigError(
            f"override {key!r}: {field.full_name} is a message; name a field inside it"
        )
    if index is not None:
        raise ConfigError(f"override {key!r}: indexing a repeated scalar is not supported; "
                          "give the whole list as a,b,c")
    _check_oneof(message, field, key)
    if compat.is_repeated(field):
        raw = value if isinstance(value, list | tuple) else _split_list(str(value))
        values = [_coerce(field, item, key) for item in raw]
        del getattr(message, field.name)[:]
        getattr(message, field.name).extend(values)
    else:
        setattr(message, field.name, _coerce(field, value, key))


def _split_list(text: str) -> list[str]:
    text = text.strip()
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    return [item.strip() for item in text.split(",") if item.strip()]


_INTEGERS = {  # C++ type -> (signed, 64-bit), as text_format.ParseInteger takes them
    descriptor.FieldDescriptor.CPPTYPE_INT32: (True, False),
    descriptor.FieldDescriptor.CPPTYPE_INT64: (True, True),
    descriptor.FieldDescriptor.CPPTYPE_UINT32: (False, False),
    descriptor.FieldDescriptor.CPPTYPE_UINT64: (False, True),
}


def _coerce(field, value, key: str):
    """``value`` (a string from the command line, or a Python value) as the field's type,
    parsed as the protobuf text format parses that field's scalars (ranges included)."""
    cpp = field.cpp_type
    kind = descriptor.FieldDescriptor
    text = str(value).strip()
    try:
        if cpp == kind.CPPTYPE_BOOL:
            return _to_bool(value)
        if isinstance(value, bool):
            raise ValueError("a bool is not a number")
        if cpp in _INTEGERS:
            return text_format.ParseInteger(text, *_INTEGERS[cpp])
        if cpp in (kind.CPPTYPE_FLOAT, kind.CPPTYPE_DOUBLE):
            return text_format.ParseFloat(text)
        if cpp == kind.CPPTYPE_ENUM:
            return text_format.ParseEnum(field, text)
        if cpp == kind.CPPTYPE_STRING:
            return _unquote(text) if field.type == kind.TYPE_STRING else _unquote(text).encode()
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"override {key!r}: {value!r} is not a valid {_type_name(field)} for "
            f"{field.full_name}: {error}"
        ) from None
    raise ConfigError(f"override {key!r}: unsupported field type of {field.full_name}")


def _to_bool(value) -> bool:
    """Only ``true`` or ``false``: text_format would also take 1 and t, which on a command line
    are more likely a slip than a choice."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise ValueError("expected true or false")
    return text == "true"


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _type_name(field) -> str:
    kind = descriptor.FieldDescriptor
    if field.cpp_type == kind.CPPTYPE_ENUM:
        return f"{field.enum_type.name} name"
    names = {kind.CPPTYPE_BOOL: "bool", kind.CPPTYPE_FLOAT: "number",
             kind.CPPTYPE_DOUBLE: "number", kind.CPPTYPE_STRING: "string"}
    return names.get(field.cpp_type, "integer")
