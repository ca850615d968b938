"""Load YAML and remember the line of every key, so errors can name it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Problem, field_name

Path_ = tuple  # a path into the document: ('hosts', 'gw1', 'apps', 0)


class Source:
    """A loaded YAML document plus a map from field path to line number."""

    def __init__(self, file: str, data: Any, lines: dict[Path_, int]):
        self.file, self.data, self._lines = file, data, lines

    def line(self, path: Path_) -> int | None:
        """The line of the longest known prefix of path (pydantic locs can go deeper)."""
        for end in range(len(path), -1, -1):
            if path[:end] in self._lines:
                return self._lines[path[:end]]
        return None

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.file, self.line(path), field_name(path), message)


def load(path: str | Path) -> Source:
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(file, None, "", f"cannot read: {exc}")]) from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise InputError([Problem(file, 1, "", "the file is empty")])
        lines: dict[Path_, int] = {(): node.start_mark.line + 1}
        _index(node, (), lines, file)
        data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(
            [Problem(file, mark.line + 1 if mark else None, "", f"bad YAML: {exc.problem}")]
        ) from None
    except yaml.YAMLError as exc:
        raise InputError([Problem(file, None, "", f"bad YAML: {exc}")]) from None
    finally:
        loader.dispose()
    return Source(file, data, lines)


def _index(node: yaml.Node, path: Path_, lines: dict[Path_, int], file: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key == "<<":
                continue
            child = path + (key,)
            if key in seen:
                raise InputError(
                    [Problem(file, key_node.start_mark.line + 1, field_name(child), "duplicate key")]
                )
            seen.add(key)
            lines[child] = key_node.start_mark.line + 1
            _index(value_node, child, lines, file)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _index(item, path + (i,), lines, file)
