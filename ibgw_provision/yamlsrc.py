"""Load YAML and remember the line of every key, so errors can name it.

Bounded for hostile input: nesting depth and the node count after aliases are
expanded are capped before anything walks the data, so a small file with
nested aliases ("billion laughs") or deep nesting is refused at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from .errors import InputError, Problem, field_name

Path_ = tuple  # a path into the document: ('hosts', 'gw1', 'apps', 0)
MAX_DEPTH = 64  # an inventory needs about 8 levels
MAX_NODES = 100_000  # values, after aliases expand: about 10,000 apps


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


class _Loader(yaml.SafeLoader):
    """PyYAML's composer recurses once per level: refuse deep nesting before Python's own limit."""

    depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise yaml.composer.ComposerError(
                    None, None, f"nested deeper than {MAX_DEPTH} levels", self.peek_event().start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def load(path: str | Path, max_nodes: int = MAX_NODES) -> Source:
    """The document at `path`; `max_nodes` bounds its values once aliases are expanded."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(file, None, "", f"cannot read: {exc}")]) from None
    loader = None
    try:
        loader = _Loader(text)
        node = loader.get_single_node()
        if node is None:
            raise InputError([Problem(file, 1, "", "the file is empty")])
        lines = _index(node, file, max_nodes)
        data = loader.construct_document(node)
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        raise InputError(
            [
                Problem(
                    file, line, "", f"bad YAML: unacceptable character #x{exc.character:04x} ({exc.reason})"
                )
            ]
        ) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        raise InputError(
            [Problem(file, mark.line + 1 if mark else None, "", f"bad YAML: {exc.problem}")]
        ) from None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:  # e.g. !!timestamp 2024-13-45
        raise InputError([Problem(file, None, "", f"bad YAML: {exc}")]) from None
    finally:
        if loader is not None:
            loader.dispose()
    return Source(file, data, lines)


def _index(root: yaml.Node, file: str, max_nodes: int = MAX_NODES) -> dict[Path_, int]:
    """The line of every key and item, walking aliases as the data will have them, within bounds."""
    lines: dict[Path_, int] = {(): root.start_mark.line + 1}
    stack: list[tuple[yaml.Node, Path_, int]] = [(root, (), 1)]
    count = 0
    while stack:
        node, path, depth = stack.pop()
        count += 1
        if count > max_nodes or depth > MAX_DEPTH:
            why = (
                f"more than {max_nodes} values once aliases are expanded"
                if count > max_nodes
                else f"nested deeper than {MAX_DEPTH} levels once aliases are expanded"
            )
            top = path[:1]  # the deep path itself can be as long as the bound
            raise InputError([Problem(file, lines.get(top, node.start_mark.line + 1), field_name(top), why)])
        if isinstance(node, yaml.MappingNode):
            stack += _mapping_children(node, path, depth, lines, file)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                stack.append((item, path + (i,), depth + 1))
    return lines


def _mapping_children(node: yaml.MappingNode, path: Path_, depth: int, lines: dict, file: str) -> list:
    children, seen = [], set()
    for key_node, value_node in node.value:
        if not isinstance(key_node, yaml.ScalarNode):
            raise InputError(
                [
                    Problem(
                        file,
                        key_node.start_mark.line + 1,
                        field_name(path),
                        "a key must be a plain value, not a list or mapping",
                    )
                ]
            )
        key = key_node.value
        child = path + (key,)  # a merge (<<) is walked too: its values count like any others
        if key in seen and key != "<<":
            raise InputError(
                [Problem(file, key_node.start_mark.line + 1, field_name(child), "duplicate key")]
            )
        seen.add(key)
        if key != "<<":
            lines[child] = key_node.start_mark.line + 1
        children.append((value_node, child, depth + 1))
    return children
