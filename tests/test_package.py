import subprocess
import sys


def test_import_stays_light_and_exports_the_api():
    code = ("import sys, re_analysis as r; "
            "heavy = [m for m in ('faiss', 'umap', 'papermill', 'seaborn', 'opacus', 'jupyter_book') if m in sys.modules]; "
            "assert not heavy, heavy; "
            "names = ['RandomErasing', 'extract_features', 'attack_accuracy', 'knn_distance', 'feature_gap', "
            "'umap_embed', 'train', 'run_attack', 'run_study']; "
            "assert all(callable(getattr(r, n)) for n in names)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_no_import_cycle_in_the_package():
    """Data flows one way: no module of re_analysis imports, at module level or inside a
    function, a module that imports it back (the strongly connected components of the import
    graph are single modules). Importing one's own package __init__ is not counted."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "re_analysis"
    mods = {}
    for f in root.rglob("*.py"):
        parts = f.relative_to(root.parent).with_suffix("").parts
        mods[".".join(parts[:-1]) if parts[-1] == "__init__" else ".".join(parts)] = f

    def targets(module, node):
        package = module if mods[module].name == "__init__.py" else module.rsplit(".", 1)[0]
        if isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            target = ".".join(base + [node.module] if node.module else base) if node.level else node.module or ""
            names = [f"{target}.{a.name}" if f"{target}.{a.name}" in mods else target for a in node.names]
        else:
            names = [a.name for a in node.names]
        return {n for n in names if n in mods and n != module and not module.startswith(n + ".")}

    graph = {m: set() for m in mods}
    for m, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                graph[m] |= targets(m, node)

    def reaches(start, goal, seen=None):
        seen = set() if seen is None else seen
        for nxt in graph[start]:
            if nxt == goal or (nxt not in seen and not seen.add(nxt) and reaches(nxt, goal, seen)):
                return True
        return False

    cycles = sorted(m for m in graph if reaches(m, m))
    assert cycles == [], f"modules on an import cycle: {cycles}"
