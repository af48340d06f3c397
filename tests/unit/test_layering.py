"""Package layering: the stages after pretraining load models through ``elmo_dist.runs``.

``classify``, ``export``, ``model`` and ``data`` never import ``elmo_dist.train`` (not even inside
a function): the run directory's layout and the checkpoint format belong to ``train`` and the
one loader, so changing them touches two places. Read from the source (AST), so lazy imports
count too."""
import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "elmo_dist"


def imported_modules(path: Path, root: Path = PACKAGE.parent) -> set[str]:
    """Absolute names of every module ``path`` (below ``root``) imports, relative imports resolved."""
    parts = list(path.relative_to(root).with_suffix("").parts)  # a package's __init__ resolves like a module
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = parts[:-node.level]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module
            found.add(name)
            found.update(f"{name}.{alias.name}" for alias in node.names)
    return found


@pytest.mark.parametrize("package", ["classify", "export", "model", "data"])
def test_downstream_packages_do_not_import_training_internals(package):
    offenders = {str(p.relative_to(PACKAGE)): sorted(m for m in imported_modules(p) if m.startswith("elmo_dist.train"))
                 for p in (PACKAGE / package).rglob("*.py")}
    assert not {k: v for k, v in offenders.items() if v}, offenders


def test_the_checker_sees_lazy_and_relative_imports(tmp_path):
    """An import inside a function and ``from ..train import x`` are both found."""
    fake = tmp_path / "elmo_dist" / "classify"
    fake.mkdir(parents=True)
    (fake / "x.py").write_text("def f():\n    from ..train import checkpoint\n    import elmo_dist.train.loop\n")
    (fake / "__init__.py").write_text("from .x import f\n")
    assert {"elmo_dist.train.checkpoint", "elmo_dist.train.loop"} <= imported_modules(fake / "x.py", tmp_path)
    assert "elmo_dist.classify.x" in imported_modules(fake / "__init__.py", tmp_path)
