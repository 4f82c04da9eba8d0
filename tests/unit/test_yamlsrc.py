"""yamlsrc.load: plain text takes a fast path; every other value goes through PyYAML's
safe constructor, so both must give what yaml.safe_load gives."""

from __future__ import annotations

import pytest
import yaml

from provisioner.errors import InputError
from provisioner.registry import yamlsrc

DOC = """\
text: plain
quoted: 'it''s'
forced: !!str 123
number: 12
share: 0.5
flag: yes
empty: ~
day: 2024-05-01
blob: !!binary aGk=
items: [a, 1, null, {k: v}]
1: numeric key
"""


def test_values_match_safe_load_and_lines_are_recorded(tmp_path):
    path = tmp_path / "a.yml"
    path.write_text(DOC)
    data, lines = yamlsrc.load(path)
    assert data == yaml.safe_load(DOC)
    assert type(data["forced"]) is str and data[1] == "numeric key"
    assert lines[("items", 3, "k")] == 10 and lines[(1,)] == 11


@pytest.mark.parametrize("doc, message, line", [
    ("b: !foo x\n", "bad value: could not determine a constructor for the tag '!foo'", 2),
    ("a: !!map x\n", "bad value: expected a mapping node, but found scalar", 2),
    ("'<<': 1\n", "YAML merge keys are not supported", 2),
    ("1: a\n1: b\n", "duplicate key 1", 3),
    ("day: 2020-13-45\n", "bad value '2020-13-45' for timestamp", 2),
    ("n: !!int abc\n", "bad value 'abc' for int", 2),
    ("x: !!float x\n", "bad value 'x' for float", 2),
    ("f: !!bool maybe\n", "bad value 'maybe' for bool", 2),
])
def test_refusals_are_input_errors_naming_the_line(tmp_path, doc, message, line):
    """Non-text scalars keep PyYAML's refusals; a value its type cannot read (a date typo)
    is an input error too, never a traceback."""
    path = tmp_path / "a.yml"
    path.write_text("# agency\n" + doc)
    with pytest.raises(InputError) as err:
        yamlsrc.load(path)
    problem = err.value.problems[0]
    assert message in str(problem) and problem.line == line


def test_loading_many_files_keeps_no_node_of_earlier_ones(tmp_path):
    """The shared safe constructor caches what it builds; every file's entries are dropped."""
    for i in range(3):
        path = tmp_path / f"a{i}.yml"
        path.write_text(f"n: {i}\nday: 2024-05-0{i + 1}\nflag: yes\n")
        assert yamlsrc.load(path)[0]["n"] == i
    assert not yamlsrc._SAFE_CONSTRUCTOR.constructed_objects
