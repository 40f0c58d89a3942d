"""The package's layering (DESIGN.md), checked on the import graph: imports only go down the layers,
no circles, every subpackage says what it holds, modules stay of honest size; and the engine seam
itself, typed records in and out."""

import ast
import importlib
from pathlib import Path

import numpy as np
import pytest

import batchemo

PKG = Path(batchemo.__file__).parent

# Rank of each layer: a module may import its own subpackage and any lower rank, nothing else.
LAYERS = {
    "errors": 0, "choices": 0, "records": 0, "_util": 0,
    "options": 1,
    "config": 2,
    "output": 3,
    "model": 4, "tta": 4, "media": 4,
    "analysis": 5, "training": 5, "engines": 5,
    "plan": 6,
    "pipeline": 7,
    "cli": 8, "__init__": 8, "results": 8, "datasets": 8,  # the API and its old paths
    "__main__": 9,
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str:
    """'batchemo.media.decode' → 'media'; 'batchemo' → '__init__'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def imports_graph() -> dict[str, set[str]]:
    """Each batchemo module → the batchemo modules it imports (at the top or inside a function)."""
    graph = {}
    for f in PKG.rglob("*.py"):
        names = set()
        tree = ast.parse(f.read_text())
        for node in ast.walk(tree):  # imports for type checkers only do not count
            if isinstance(node, ast.If) and getattr(node.test, "id", "") == "TYPE_CHECKING":
                node.body = []
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                raise AssertionError(f"{f}: relative import; the package imports absolutely")
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("batchemo"):
                for alias in node.names:  # `from batchemo.media import decode` names a module
                    sub = f"{node.module}.{alias.name}"
                    names.add(sub if (PKG.parent / (sub.replace(".", "/") + ".py")).exists()
                              or (PKG.parent / sub.replace(".", "/")).is_dir() else node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names if a.name.startswith("batchemo"))
        graph[module_name(f)] = names
    return graph


def test_imports_only_go_down_the_layers():
    wrong = []
    for mod, names in imports_graph().items():
        for name in names:
            own, other = layer(mod), layer(name)
            if own != other and LAYERS[other] >= LAYERS[own] and other != "__init__":
                wrong.append(f"{mod} imports {name}")
            if other == "__init__" and own != "__init__":
                wrong.append(f"{mod} imports the package's API (batchemo/__init__)")
    assert not wrong, wrong


def test_no_import_circles():
    graph = imports_graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 done

    def visit(mod: str, path: list[str]) -> None:
        state[mod] = 1
        for nxt in sorted(graph.get(mod, ())):
            if nxt == mod or nxt not in graph:
                continue
            if state.get(nxt) == 1:
                raise AssertionError("import circle: " + " → ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[mod] = 2

    for mod in sorted(graph):
        if mod not in state:
            visit(mod, [mod])


def test_every_module_has_a_layer_and_every_subpackage_says_what_it_holds():
    assert {layer(m) for m in imports_graph()} <= set(LAYERS)
    for init in PKG.glob("*/__init__.py"):
        doc = ast.get_docstring(ast.parse(init.read_text())) or ""
        assert "May import" in doc or "Imports nothing" in doc, init


@pytest.mark.parametrize("path", ["batchemo.run", "batchemo.load_model", "batchemo.train",
                                  "batchemo.evaluate", "batchemo.RunConfig", "batchemo.EMOTIONS",
                                  "batchemo.results.load", "batchemo.datasets.save_npz",
                                  "batchemo.datasets.load_folder", "batchemo.model.quantize",
                                  "batchemo.model.load_model"])
def test_documented_import_paths_still_work(path):
    module, name = path.rsplit(".", 1)
    assert callable(getattr(importlib.import_module(module), name)) or name == "EMOTIONS"


def test_workers_do_not_import_the_pipelines_heavy_libraries():
    import subprocess
    import sys

    heavy = "{'pandas', 'pyarrow', 'tensorflow', 'keras'}"
    code = ("import sys, batchemo.media.extract; "
            f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {heavy}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_engines_never_import_the_pipeline():
    assert not any(layer(n) in ("pipeline", "plan", "output", "analysis")
                   for m, names in imports_graph().items() if layer(m) == "engines" for n in names)


def test_modules_are_of_honest_size():
    sizes = {f.name: len(f.read_text().splitlines()) for f in PKG.rglob("*.py")}
    assert max(sizes.values()) <= 400, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_local_engine_yields_typed_results(tmp_path, make_image, random_model):
    from batchemo.config import RunConfig
    from batchemo.engines import get_engine
    from batchemo.media.scan import scan
    from batchemo.model import load_model
    from batchemo.plan import extract_settings
    from batchemo.records import EngineJob, Face, FileResult, FileTask

    make_image("in/a.png", size=(160, 200), faces=[(20, 40, 64)])
    make_image("in/b.png", size=(160, 200))
    model = load_model(random_model, "float32")
    tasks = [FileTask(item, "") for item in scan([tmp_path / "in"])]
    cfg = RunConfig(input=[str(tmp_path / "in")], workers=0, quiet=True)
    job = EngineJob(tasks, extract_settings(cfg), model, tta=False, workers=0)
    results = list(get_engine("local")(job))
    assert all(isinstance(r, FileResult) for r in results)
    by_name = {r.item.source: r for r in results}
    assert sorted(by_name) == ["a.png", "b.png"]
    (face,) = by_name["a.png"].faces
    assert isinstance(face, Face) and face.probs.shape == (len(model.classes),)
    assert np.isclose(face.probs.sum(), 1.0, atol=1e-4)
    assert by_name["b.png"].faces == [] and len(by_name["b.png"].frames) == 1


def test_every_run_option_either_changes_rows_through_the_settings_id_or_says_it_does_not():
    """A new RunConfig field must be sorted here: into ExtractSettings (hashed, so a change
    reprocesses files) or into the options that only say how, where or whether to run."""
    import dataclasses

    from batchemo.config import RunConfig
    from batchemo.records import ExtractSettings

    hashed = {f.name for f in dataclasses.fields(ExtractSettings)} - {"margin"}
    # model, precision, tta: hashed beside ExtractSettings (plan.settings_id)
    how = {"input", "out", "include", "exclude", "model", "precision", "tta", "workers",
           "batch_size", "engine", "ray_address", "ray_gpus", "ray_actors", "quiet", "log_json",
           "force", "retry_errors", "prune_deleted", "wait", "plots", "timeline_bin",
           "segment_switch_cost"}
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    assert fields - hashed - how == set(), "sort the new option into ExtractSettings or `how`"
    assert hashed <= fields
