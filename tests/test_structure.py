"""The package's layering (DESIGN.md), checked: engines never import the pipeline, the store only
stores, modules stay of honest size; and the engine seam itself, typed records in and out."""

import ast
from pathlib import Path

import numpy as np

import batchemo

PKG = Path(batchemo.__file__).parent


def imported(path: Path) -> set[str]:
    """Module names `path` imports (relative imports as written, e.g. '.pipeline' → 'pipeline')."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            names.add((node.module or "").split(".")[-1])
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name.split(".")[-1] for a in node.names)
    return names


def test_engines_never_import_the_pipeline():
    for f in (PKG / "engines").glob("*.py"):
        assert "pipeline" not in imported(f), f.name


def test_the_store_only_stores():
    assert not imported(PKG / "store.py") & {"track", "summarize", "timeline", "plots", "derive"}


def test_modules_are_of_honest_size():
    sizes = {f.name: len(f.read_text().splitlines()) for f in PKG.rglob("*.py")}
    assert max(sizes.values()) <= 420, sorted(sizes.items(), key=lambda kv: -kv[1])[:3]


def test_local_engine_yields_typed_results(tmp_path, make_image, random_model):
    from batchemo.config import RunConfig
    from batchemo.engines import get_engine
    from batchemo.model import load_model
    from batchemo.records import EngineJob, Face, FileResult, FileTask
    from batchemo.scan import scan

    make_image("in/a.png", size=(160, 200), faces=[(20, 40, 64)])
    make_image("in/b.png", size=(160, 200))
    model = load_model(random_model, "float32")
    tasks = [FileTask(item, "") for item in scan([tmp_path / "in"])]
    cfg = RunConfig(input=[str(tmp_path / "in")], workers=0, quiet=True)
    results = list(get_engine("local")(EngineJob(tasks, cfg, model, tta=False)))
    assert all(isinstance(r, FileResult) for r in results)
    by_name = {r.item.source: r for r in results}
    assert sorted(by_name) == ["a.png", "b.png"]
    (face,) = by_name["a.png"].faces
    assert isinstance(face, Face) and face.probs.shape == (len(model.classes),)
    assert np.isclose(face.probs.sum(), 1.0, atol=1e-4)
    assert by_name["b.png"].faces == [] and len(by_name["b.png"].frames) == 1
