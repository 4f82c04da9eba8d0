"""Safe YAML loading that remembers the line of every value, for error messages.

``load(path)`` returns ``(data, lines)`` where ``lines`` maps a key path such as
``("services", 0, "biaya")`` to the 1-based line it stands on. Only the safe YAML
subset is accepted (no tags, no Python objects), and non-UTF-8 or invalid files
raise ``InputError`` naming the file and line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from ..errors import InputError, Problem

KeyPath = tuple[Any, ...]


def load(path: Path) -> tuple[Any, dict[KeyPath, int]]:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError([Problem(path, None, "file", f"cannot read: {exc.strerror}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError(
            [Problem(path, line, "file", "not valid UTF-8", hint="save the file as UTF-8")]
        ) from None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise InputError([Problem(path, line, "file", "contains a NUL byte")])
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else None
        reason = getattr(exc, "problem", None) or "invalid YAML"
        raise InputError([Problem(path, line, "file", f"not valid YAML: {reason}")]) from None
    lines: dict[KeyPath, int] = {}
    if node is None:
        return None, lines
    try:
        return _build(node, (), lines, set()), lines
    except _BadNode as exc:
        raise InputError([Problem(path, exc.line, "file", exc.message)]) from None
    finally:  # the shared constructor remembers every node it built: forget this file's
        _SAFE_CONSTRUCTOR.constructed_objects.clear()
        _SAFE_CONSTRUCTOR.recursive_objects.clear()


class _BadNode(Exception):
    def __init__(self, line: int, message: str):
        self.line = line
        self.message = message


# libyaml's parser when PyYAML has it (about 10x faster on large inventories).
_COMPOSER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_SAFE_CONSTRUCTOR = yaml.SafeLoader("")
_MAP_TAG = "tag:yaml.org,2002:map"
_SEQ_TAG = "tag:yaml.org,2002:seq"
_STR_TAG = "tag:yaml.org,2002:str"
_ScalarNode = yaml.ScalarNode
_MappingNode = yaml.MappingNode


def _build(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], seen: set[int]) -> Any:
    line = lines[path] = node.start_mark.line + 1
    if isinstance(node, _ScalarNode):
        return _scalar(node)
    if node.tag not in (_MAP_TAG, _SEQ_TAG):
        raise _BadNode(line, f"unsupported YAML tag {node.tag}")
    # An alias reuses a node; refusing them rules out exponential "billion laughs" input.
    if id(node) in seen:
        raise _BadNode(line, "YAML aliases (*name) are not supported")
    seen.add(id(node))
    if isinstance(node, _MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, _ScalarNode):
                raise _BadNode(key_node.start_mark.line + 1, "a mapping key must be plain text")
            key = _scalar(key_node)
            if key == "<<":
                raise _BadNode(key_node.start_mark.line + 1, "YAML merge keys are not supported")
            if key in result:
                raise _BadNode(key_node.start_mark.line + 1, f"duplicate key {key!r}")
            result[key] = _build(value_node, (*path, key), lines, seen)
        return result
    return [_build(item, (*path, i), lines, seen) for i, item in enumerate(node.value)]


def _scalar(node: yaml.ScalarNode) -> Any:
    # Most values are text: the str constructor returns node.value as it is, so skip
    # PyYAML's generic construct_object (the hot spot of loading a large inventory).
    if node.tag == _STR_TAG:
        return node.value
    try:
        return _SAFE_CONSTRUCTOR.construct_object(node, deep=True)
    except yaml.YAMLError as exc:
        raise _BadNode(node.start_mark.line + 1, f"bad value: {exc}") from None
    except (ValueError, KeyError, TypeError) as exc:  # e.g. a date like 2020-13-45
        raise _BadNode(node.start_mark.line + 1,
                       f"bad value {node.value!r} for {node.tag.rsplit(':', 1)[-1]}: {exc}") from None
