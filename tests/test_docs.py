"""The README cannot drift: schema tables, the test command and command examples are checked."""

import re
import shlex
from pathlib import Path

import pytest

from batchemo.analysis.timeline import timeline_schema
from batchemo.cli import main
from batchemo.output.tables import (
    FILES_SCHEMA,
    FRAMES_SCHEMA,
    RUNS_SCHEMA,
    SEGMENTS_SCHEMA,
    faces_schema,
    summary_schema,
)

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
TYPES = {"string": "string", "int64": "int64", "int32": "int32", "double": "float64",
         "float": "float32", "bool": "bool", "timestamp[us, tz=UTC]": "timestamp"}


def readme_table(name: str) -> list[tuple[str, str]]:
    section = README.split(f"\n### {name}\n", 1)[1].split("\n#", 1)[0]
    return re.findall(r"^\| `([^`]+)` \| (\w+) \|", section, re.M)


def schema_rows(schema) -> list[tuple[str, str]]:
    rows, seen = [], set()
    for f in schema:
        name = re.sub(r"^(p|share|smooth)_angry$", r"\1_<class>", f.name)
        if re.match(r"^(p|share|smooth)_", f.name) and name == f.name:
            continue  # the other classes are the same documented row
        if name not in seen:
            rows.append((name, TYPES[str(f.type)]))
            seen.add(name)
    return rows


@pytest.mark.parametrize("name, schema", [
    ("faces", faces_schema(["angry", "happy"])), ("frames", FRAMES_SCHEMA),
    ("files", FILES_SCHEMA), ("runs", RUNS_SCHEMA), ("segments", SEGMENTS_SCHEMA),
    ("summary", summary_schema(["angry", "happy"])),
    ("timeline", timeline_schema(["angry", "happy"])),
])
def test_readme_schema_tables_match_the_writer(name, schema):
    assert readme_table(name) == schema_rows(schema)


def test_ci_runs_the_readme_test_command():
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    test_cmd = next(b.strip() for b in blocks if "pytest" in b)
    assert test_cmd in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_examples_use_real_commands_and_options():
    lines = [ln.split("  #")[0].strip() for b in re.findall(r"```sh\n(.*?)```", README, re.S)
             for ln in b.splitlines()]
    examples = [m.group(1) for ln in lines
                # also `VAR=value batchemo …` and `ray job submit … -- batchemo …`
                for m in [re.search(r"(?:^|&& |-- |^[A-Z_]+=\S+ )(batchemo \S.*)", ln)] if m]
    assert len(examples) >= 10
    commands = set()
    for ex in examples:
        args = shlex.split(ex)[1:]
        cmd = main.commands.get(args[0])
        assert cmd is not None, ex
        commands.add(args[0])
        opts = {o for p in cmd.params for o in p.opts + p.secondary_opts}
        for a in args[1:]:
            if a.startswith("-"):
                assert a in opts, f"{a} in: {ex}"
    assert commands == set(main.commands)  # every command has an example


def test_readme_has_no_unfilled_sections():
    assert not re.search(r"\b[A-Z]+_SECTION\b", README)
