"""The inference layer (:mod:`reid_attn.inference`) and the rule that commands share code only
through library modules: no command module imports another."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import reid_attn

PACKAGE = Path(reid_attn.__file__).parent
#: The command modules: each a console entry point, none a library of the others.
COMMANDS = ("train", "evaluate", "extract", "export", "search", "visualize", "report", "tune")


def imported_modules(path: Path) -> set[str]:
    """Every module an ``import`` or ``from ... import`` of the file names, as a dotted path
    (``from reid_attn import x`` gives ``reid_attn.x``; relative imports resolved in the
    package)."""
    imported = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = "reid_attn" if node.level else ""
            base = ".".join(filter(None, [base, node.module]))
            imported.add(base)
            imported.update(f"{base}.{alias.name}" for alias in node.names)
    return imported


@pytest.mark.parametrize("command", COMMANDS)
def test_no_command_imports_another(command: str) -> None:
    others = {f"reid_attn.{c}" for c in COMMANDS if c != command}
    assert (PACKAGE / f"{command}.py").is_file()
    imports = imported_modules(PACKAGE / f"{command}.py")
    assert not imports & others, f"{command}.py imports the command(s) {imports & others}"


def test_the_import_check_sees_every_form(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "import reid_attn.search\nfrom reid_attn import visualize\n"
        "from reid_attn.extract import extract\nfrom . import tune\n"
    )
    imports = imported_modules(source)
    assert {"reid_attn.search", "reid_attn.visualize", "reid_attn.extract"} <= imports
    assert "reid_attn.tune" in imports
