"""The book's text chapters against the code: the generated tables hold what the code
declares, the method chapter includes them by paths that resolve, every chapter is in the
table of contents, and every name the API page documents exists. Fast: no book build."""

import importlib
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from re_analysis.book import GENERATED, link_code, markdown_cell, write_generated

REPO = Path(__file__).resolve().parents[1]
BOOK = REPO / "book"


def table_rows(text: str) -> list[list[str]]:
    """The body rows of a markdown table, cells stripped (escaped pipes kept whole)."""
    lines = [line for line in text.splitlines() if line.startswith("|")][2:]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    stage = tmp_path_factory.mktemp("stage")
    paths = write_generated(stage)
    return stage, {p.name: p.read_text(encoding="utf-8") for p in paths}


@pytest.mark.parametrize("page, module", [("attacks_fidelity.md", "re_analysis.attacks"),
                                          ("defenses_fidelity.md", "re_analysis.defenses")])
def test_fidelity_tables_hold_every_declared_deviation(generated, page, module):
    from re_analysis.fidelity import fidelity_table

    registry = getattr(importlib.import_module(module), "ATTACKS" if "attacks" in module else "DEFENSES")
    table = fidelity_table(registry)
    rows = table_rows(generated[1][page])
    assert len(rows) == len(table)  # one row per deviation, in the same order
    for row, (_, want) in zip(rows, table.iterrows()):
        assert row[3:] == [markdown_cell(want["deviation"]), markdown_cell(want["reason"])]
    firsts = {row[0].strip("`"): row for row in rows if row[0]}
    assert set(firsts) == set(registry.names())  # each method named once, on its first row
    for name, row in firsts.items():
        cls = registry.get(name)
        assert row[1] == markdown_cell(cls.paper)
        url = re.search(r"https?://\S+", cls.code).group(0)
        assert f"]({url})" in row[2] and row[2] == markdown_cell(link_code(cls.code))


def test_presets_table_follows_the_preset_files(generated):
    from re_analysis.study import list_presets, load_preset

    rows = {r[0].strip("`"): r for r in table_rows(generated[1]["presets.md"])}
    assert set(rows) == set(list_presets())
    for name, row in rows.items():
        p = load_preset(name)
        assert row[1:4] == [p.dataset, ", ".join(map(str, p.seeds)), str(len(p.pairs))]
        assert row[4] == markdown_cell(p.description)
    assert rows["quick"][1:4] == ["glyphs", "0, 1, 2", "3"]  # none, RE, BiDO against LOMMA-GMI


def test_links_name_the_repository():
    assert link_code("https://github.com/o/r") == "[o/r](https://github.com/o/r)"
    assert link_code("https://github.com/o/r (minus x)") == "[o/r](https://github.com/o/r) (minus x)"
    assert link_code("no address") == "no address"
    assert markdown_cell("a | b\nc") == "a \\| b c"


def test_method_chapter_includes_what_is_generated(generated):
    """MyST resolves an include relative to the including page: book/method.md -> book/…"""
    stage, pages = generated
    text = (BOOK / "method.md").read_text(encoding="utf-8")
    included = re.findall(r"```\{include\}\s+(\S+)", text)
    assert sorted(Path(i).name for i in included) == sorted(pages)
    for rel in included:
        assert (stage / "book" / rel).resolve() == (stage / GENERATED / Path(rel).name).resolve()
        assert (stage / "book" / rel).is_file()
    assert f"/{GENERATED.as_posix()}/" in (REPO / ".gitignore").read_text().split()  # never committed


def test_build_book_stages_the_generated_tables(tmp_path, monkeypatch):
    import re_analysis.book as book
    import re_analysis.audit as audit
    import re_analysis.study as study

    seen = {}

    def fake_builder(cmd, **kwargs):
        stage, out = Path(cmd[2]), Path(cmd[4])
        seen["generated"] = sorted(p.name for p in (stage / GENERATED).iterdir())
        (out / "_build" / "html").mkdir(parents=True)
        (out / "_build" / "html" / "index.html").write_text("built")
        return subprocess.CompletedProcess(cmd, 0, "", "")

    import yaml

    import re_analysis.publish as publish
    import re_analysis.reproduce as reproduce

    def fake_stage(bundle, view):
        view.mkdir(parents=True)
        (view / "preset.yaml").write_text(yaml.safe_dump(study.load_preset("smoke").to_dict()))
        return publish.BundleReport(view, "smoke", ["none-s0", "random-erasing-s0"], [], 3,
                                    {"commits": ["abc"], "machines": ["x86_64"], "unit_core_hours": 0.1})

    monkeypatch.setattr(study, "run_study", lambda *a, **k: None)
    monkeypatch.setattr(publish, "publish_study", lambda run, to, preset: seen.setdefault("published", (run, to)) and to)
    monkeypatch.setattr(publish, "stage_bundle", fake_stage)
    monkeypatch.setattr(reproduce, "reproduce_piece", lambda *a, **k: None)
    monkeypatch.setattr(book, "execute_notebooks", lambda *a, **k: [])
    monkeypatch.setattr(audit, "example_audit", lambda out, **k: {"report": Path(out) / "report.html"})
    monkeypatch.setattr(book, "write_audit_page", lambda paths, stage: seen.setdefault("audit", paths["report"]))
    monkeypatch.setattr(book, "builder_command", lambda: ["jupyter-book"])
    monkeypatch.setattr(book.subprocess, "run", fake_builder)
    index = book.build_book("smoke", run_dir=tmp_path / "run", source=REPO, build_dir=tmp_path / "build",
                            progress=False)
    assert index.read_text() == "built"
    assert seen["generated"] == ["attacks_fidelity.md", "defenses_fidelity.md", "presets.md", "provenance.md", "rules.md",
                                 "verdicts.md"]
    assert seen["published"] == ((tmp_path / "run").resolve(), (tmp_path / "run-published").resolve())  # beside the run
    assert seen["audit"] == (tmp_path / "build").resolve() / "audit-example" / "report.html"  # the chapter's example
    provenance = (tmp_path / "build" / "stage" / GENERATED / "provenance.md").read_text()
    assert "computed every number from scratch" in provenance and "2 of 2 units" in provenance


def toc_files(node) -> list[str]:
    if isinstance(node, dict):
        return ([node["file"]] if "file" in node else []) + [f for v in node.values() for f in toc_files(v)]
    if isinstance(node, list):
        return [f for v in node for f in toc_files(v)]
    return []


def test_every_chapter_is_in_the_table_of_contents():
    toc = yaml.safe_load((REPO / "_toc.yml").read_text())
    listed = [toc["root"]] + toc_files(toc["parts"])
    for entry in listed:
        assert any((REPO / f"{entry}{ext}").is_file() for ext in (".md", ".ipynb")), entry
    assert {f"book/{p.stem}" for p in BOOK.glob("*.md")} <= set(listed)
    assert "orphan" not in (BOOK / "safety.md").read_text()


def documented_names() -> list[tuple[str, list[str]]]:
    """(dotted name, members) of every autodoc directive of the API page."""
    out = []
    for block in re.split(r"\n(?=\.\. auto)", (BOOK / "api.md").read_text()):
        found = re.match(r"\.\. auto(?:function|class|module):: (\S+)", block.strip())
        if found:
            members = re.search(r":members:([^\n]*)", block)
            out.append((found.group(1), [m.strip() for m in members.group(1).split(",") if m.strip()]
                        if members else []))
    return out


def resolve(dotted: str):
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(dotted)


def test_every_name_on_the_api_page_exists():
    names = documented_names()
    assert len(names) > 60
    for dotted, members in names:
        obj = resolve(dotted)
        for m in members:
            assert hasattr(obj, m), f"{dotted} has no member {m}"
    documented = {d for d, _ in names}
    for new in ("re_analysis.verdicts.claim_verdicts", "re_analysis.metrics.pixel_judge",
                "re_analysis.metrics.design_mde", "re_analysis.fidelity.fidelity_table",
                "re_analysis.artifacts.verify_runs", "re_analysis.augment.StandardAugmentation",
                "re_analysis.registry.Registry"):
        assert new in documented, new


def test_notebooks_only_show():
    """Every chapter's analysis lives in tested library functions (re_analysis.report): the
    notebooks hold at most 300 lines of code in all and define no function."""
    import json

    lines = 0
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            src = "".join(cell["source"])
            assert not re.search(r"^\s*(def|class|lambda)\b|= lambda", src, re.M), (path.name, src[:80])
            lines += len(src.splitlines())
    assert lines <= 300, lines


def test_verify_runs_is_a_lazy_export():
    import re_analysis
    from re_analysis.artifacts import verify_runs

    assert re_analysis.verify_runs is verify_runs and "verify_runs" in re_analysis.__all__


def test_notebooks_run_two_at_a_time_and_come_back_in_book_order(tmp_path, monkeypatch):
    """With workers=2 two notebooks execute at once (each waits at a barrier the other must
    reach); the outputs are listed in the book's order whatever order they finish in."""
    import threading

    import nbformat
    import papermill

    from re_analysis import book

    barrier = threading.Barrier(2, timeout=20)
    finished = []

    def fake_execute(source, target, **kwargs):
        name = Path(source).stem
        if name in book.NOTEBOOKS[:2]:
            barrier.wait()  # raises BrokenBarrierError if the two never run together
        if name == book.NOTEBOOKS[0]:
            threading.Event().wait(0.2)  # finishes after the second
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1", metadata={"tags": ["parameters"]})])
        nbformat.write(nb, target)
        finished.append(name)

    monkeypatch.setattr(papermill, "execute_notebook", fake_execute)
    out = book.execute_notebooks(REPO, tmp_path, {"run_dir": "/nowhere/run", "preset": "smoke"}, progress=False,
                                 workers=2)
    assert [p.stem for p in out] == book.NOTEBOOKS
    assert finished[0] == book.NOTEBOOKS[1] and finished != book.NOTEBOOKS
    tags = nbformat.read(str(out[0]), as_version=4).cells[0].metadata["tags"]
    assert "remove-cell" in tags  # the plumbing is hidden in parallel too
