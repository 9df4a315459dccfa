"""Every public module-level function and class of ``strategies/`` says what it is and where it comes
from: the methods' modules cite their paper or the section of docs/methods.md that states the method;
a helper that is not from a paper says so."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "strategies"
# the modules that implement the papers' methods (adma covers adma_landmarks.py too)
METHOD_MODULES = ("adma", "emoc", "aift", "mmd", "diversity", "coldstart", "uncertainty")
SECTION = re.compile(r"docs/methods\.md §\d")
PAPER = re.compile(r"\bet al\.|[A-Z][a-z]+ (?:&|and) [A-Z][a-z]+|\b(?:19|20)\d\d\b|[A-Za-z]+'\d\d\b")


def public_definitions() -> list[tuple[str, str, str | None]]:
    """(module, name, docstring) of every public module-level function and class."""
    out = []
    for path in sorted(ROOT.glob("*.py")):
        for node in ast.parse(path.read_text()).body:
            public = not getattr(node, "name", "_").startswith("_")
            if public and isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                doc = ast.get_docstring(node)
                out.append((path.stem, node.name, " ".join(doc.split()) if doc else None))
    return out


def test_the_walk_finds_the_strategies():
    names = {(module, name) for module, name, _ in public_definitions()}
    assert {("adma", "ADMAStrategy"), ("adma_landmarks", "Landmarks"), ("emoc", "emoc_last_layer")} <= names
    assert {("diversity", "badge"), ("coldstart", "typiclust"), ("uncertainty", "margin"), ("mmd", "mmd2")} <= names


def test_every_public_function_and_class_has_a_docstring():
    missing = [f"strategies.{module}.{name}" for module, name, doc in public_definitions() if not doc]
    assert not missing, missing


def test_every_public_docstring_names_its_source():
    silent = [
        f"strategies.{module}.{name}"
        for module, name, doc in public_definitions()
        if doc and not (SECTION.search(doc) or PAPER.search(doc) or "not from a paper" in doc)
    ]
    assert not silent, silent


def test_the_methods_modules_cite_a_paper_or_a_methods_section():
    uncited = [
        f"strategies.{module}.{name}"
        for module, name, doc in public_definitions()
        if module.split("_")[0] in METHOD_MODULES and not (doc and (SECTION.search(doc) or PAPER.search(doc)))
    ]
    assert not uncited, uncited
