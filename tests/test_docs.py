"""The docs cannot drift: docs/output.md's schema tables against the writer, every `batchemo …`
command of the README against the CLI, the README's length and its test command against CI's."""

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
OUTPUT_DOC = (ROOT / "docs" / "output.md").read_text()
DOCS = sorted((ROOT / "docs").glob("*.md"))
TYPES = {"string": "string", "int64": "int64", "int32": "int32", "double": "float64",
         "float": "float32", "bool": "bool", "timestamp[us, tz=UTC]": "timestamp"}


def doc_table(name: str) -> list[tuple[str, str]]:
    """The (column, type) rows of docs/output.md's `### name` table."""
    section = OUTPUT_DOC.split(f"\n### {name}\n", 1)[1].split("\n#", 1)[0]
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


def code_lines(text: str, lang: str = "sh") -> list[str]:
    """Every line of the text's ```lang blocks."""
    return [ln.strip() for b in re.findall(rf"```{lang}\n(.*?)```", text, re.S)
            for ln in b.splitlines()]


def batchemo_commands(text: str) -> list[str]:
    """`batchemo …` invocations in the text's shell blocks: at the start of a line, after `&& `,
    `VAR=value `, `ray job submit … -- `, a crontab line's `flock -n LOCK ` or as the command of
    `docker run … batchemo`."""
    start = r"(?:^|&& |-- |^(?:[A-Z_]+=\S+ )+|flock -n \S+ |^docker run .* )"
    return [m.group(1) for ln in code_lines(text)
            for m in [re.search(start + r"(batchemo \S.*)$", ln)] if m]


def assert_commands_exist(examples: list[str]) -> set[str]:
    """Each example names a command of the CLI and only options that command has."""
    used = set()
    for ex in examples:
        args = shlex.split(ex, comments=True)[1:]
        cmd = main.commands.get(args[0])
        assert cmd is not None, f"no command {args[0]!r}: {ex}"
        used.add(args[0])
        opts = {o for p in cmd.params for o in p.opts + p.secondary_opts}
        for a in args[1:]:
            if a.startswith("-"):
                assert a.split("=", 1)[0] in opts, f"{cmd.name} has no option {a}: {ex}"
    return used


@pytest.mark.parametrize("name, schema", [
    ("faces", faces_schema(["angry", "happy"])), ("frames", FRAMES_SCHEMA),
    ("files", FILES_SCHEMA), ("runs", RUNS_SCHEMA), ("segments", SEGMENTS_SCHEMA),
    ("summary", summary_schema(["angry", "happy"])),
    ("timeline", timeline_schema(["angry", "happy"])),
])
def test_output_doc_schema_tables_match_the_writer(name, schema):
    assert doc_table(name) == schema_rows(schema)


def test_readme_names_only_tables_that_exist():
    # The README's short table lists each table by name; its key columns are real columns.
    section = README.split("\n## Output\n", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| [^|]+ \| (.+) \|$", section, re.M)
    assert {t for t, _ in rows} == {"faces", "frames", "files", "runs", "summary", "timeline",
                                    "segments"}
    for table, keys in rows:
        documented = {c for c, _ in doc_table(table)}
        for col in re.findall(r"`([a-z_<>]+)`", re.sub(r"\([^)]*\)", "", keys)):
            assert col in documented, f"{table}.{col} is not in docs/output.md"


def test_ci_runs_the_readme_test_command():
    test_cmds = [ln for ln in code_lines(README) if "pytest" in ln and ln.startswith("pip install")]
    assert test_cmds == ['pip install ".[test]" && python -m pytest -q -n 2']
    assert test_cmds[0] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_readme_shows_every_command_with_options_that_exist():
    examples = batchemo_commands(README)
    assert len(examples) >= 10
    assert assert_commands_exist(examples) == set(main.commands)  # every command has an example


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_docs_commands_and_options_exist(doc):
    assert_commands_exist(batchemo_commands(doc.read_text()))


def test_the_command_check_catches_a_wrong_option():
    with pytest.raises(AssertionError, match="no option --frames-per-second"):
        assert_commands_exist(["batchemo run -i videos/ --frames-per-second 5"])
    with pytest.raises(AssertionError, match="no command"):
        assert_commands_exist(["batchemo analyse -i videos/"])


def test_readme_is_a_page_not_a_manual():
    assert len(README.splitlines()) <= 250


def test_readme_links_every_doc_and_the_docs_link_files_that_exist():
    for doc in DOCS:
        assert f"(docs/{doc.name})" in README, f"the README does not point to docs/{doc.name}"
    for page in [ROOT / "README.md", *DOCS]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_docs_name_models_and_figures_not_the_story_of_their_making():
    # Issue 29 item 4: a model is named by its id, a figure by its command, CPU and date.
    for page in [ROOT / "README.md", *DOCS]:
        story = re.search(r"\bsteps? \d|release before|the previous release|this session",
                          page.read_text(), re.I)
        assert not story, f"{page.name}: {story.group(0)!r}"


def test_docs_have_no_unfilled_sections():
    for text in [README, *(d.read_text() for d in DOCS)]:
        assert not re.search(r"\b[A-Z]+_(SECTION|PLACEHOLDER)\b|\bTODO\b|\bTBD\b", text)
