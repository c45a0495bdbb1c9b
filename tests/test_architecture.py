"""The layout rule (docs/decisions.md, "Rooms"): no import circles between modules, and no
function-level import of the project's own modules (the usual way to hide a circle). The layer
direction itself is import-linter's job (`lint-imports`, run by the test command)."""

import ast
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("dashboard", "streams", "simulator")


def test_no_module_imports_the_project_inside_a_function():
    hidden = []
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            # AppConfig.ready() is where Django wants signal receivers imported (after the models).
            if "migrations" in path.parts or path.name == "apps.py":
                continue
            tree = ast.parse(path.read_text(), str(path))
            for func in ast.walk(tree):
                if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                for node in ast.walk(func):
                    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PACKAGES:
                        hidden.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
                    elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in node.names):
                        hidden.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not hidden, "move these imports to the top of the module: " + ", ".join(hidden)


def test_no_import_circles_between_modules():
    graph = grimp.build_graph(*PACKAGES)
    modules = sorted(graph.modules)
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []

    def visit(start):
        # Tarjan's strongly connected components, iteratively (the graph is a few hundred modules).
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))

    for module in modules:
        if module not in index:
            visit(module)
    assert not cycles, f"import circles: {cycles}"
