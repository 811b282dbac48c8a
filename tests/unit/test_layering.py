"""models/ is the domain and learning package; streams/ (Kafka, Faust) builds on it."""

from __future__ import annotations

import ast

from streams.settings import ROOT


def _imported(tree: ast.AST) -> list[str]:
    names: list[str] = []
    for node in ast.walk(tree):  # imports inside functions count too
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_models_never_import_streams() -> None:
    files = sorted((ROOT / "models").glob("*.py"))
    assert len(files) > 10
    offenders = {
        f.name: name
        for f in files
        for name in _imported(ast.parse(f.read_text(), str(f)))
        if name == "streams" or name.startswith("streams.")
    }
    assert offenders == {}


def test_the_check_sees_a_lazy_import() -> None:
    code = "def f():\n    from streams.settings import Settings\n    import streams.cli\n"
    assert _imported(ast.parse(code)) == ["streams.settings", "streams.cli"]
