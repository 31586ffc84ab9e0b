"""The main job: run the study, execute every notebook through papermill into a staging
copy of the book (the sources stay unchanged) and render it with Jupyter Book 1.x.

Example:
    >>> from re_analysis.book import build_book
    >>> build_book("smoke")  # doctest: +SKIP  (-> _build/html/index.html)
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .errors import ReAnalysisError
from .runs import run_record

NOTEBOOKS = ["01_training", "02_attacks", "03_feature_gap", "04_tradeoff", "05_ablations", "06_conclusions"]


def builder_command() -> list[str]:
    """The Jupyter Book command line, run by the interpreter that runs the suite.

    Resolved from the ``jupyter-book`` console-script entry point of this environment, not
    from ``PATH``: an unactivated virtual environment or a pipx install (which exposes only
    ``re-analysis``) has the builder installed but not on ``PATH``.

    Example:
        >>> builder_command()[:2] == [sys.executable, "-c"]
        True
    """
    from importlib.metadata import entry_points

    found = list(entry_points(group="console_scripts", name="jupyter-book"))
    if not found:
        raise ReAnalysisError(f"jupyter-book is not installed in the Python environment of {sys.executable}; install "
                              f"it there with `{sys.executable} -m pip install 'jupyter-book>=1,<2'`")
    run = (f"import sys; from importlib.metadata import EntryPoint; sys.argv[0] = 'jupyter-book'; "
           f"sys.exit(EntryPoint(name='jupyter-book', value={found[0].value!r}, group='console_scripts').load()())")
    return [sys.executable, "-c", run]


def find_source(source: str | Path | None) -> Path:
    src = Path(source) if source else Path.cwd()
    if not (src / "_config.yml").is_file() or not (src / "notebooks").is_dir():
        raise ReAnalysisError(f"{src.resolve()} holds no book (_config.yml and notebooks/); run from the repository "
                              "root or pass --source to it")
    return src


PLUMBING_TAGS = {"parameters", "injected-parameters"}


def hide_plumbing(notebook: Path, replace: dict[str, str] | None = None) -> None:
    """Make an executed notebook read like a chapter: papermill's parameter cells are removed
    from the rendered page (the re-run page documents the parameters), and local paths in
    outputs (``replace``: absolute path -> what the reader sees) are rewritten."""
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        if PLUMBING_TAGS & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
        for old, new in (replace or {}).items():
            for out in cell.get("outputs", []):
                if "text" in out:
                    out["text"] = out["text"].replace(old, new)
                for mime, value in out.get("data", {}).items():
                    if mime.startswith("text/") and isinstance(value, str):
                        out["data"][mime] = value.replace(old, new)
    nbformat.write(nb, str(notebook))


def execute_notebooks(src: Path, stage: Path, params: dict, progress: bool = True, workers: int = 1) -> list[Path]:
    """papermill each notebook into ``stage/notebooks`` with ``params``, ``workers`` at a time
    (each runs in its own kernel process; they only read the finished study); returns the
    outputs in book order."""
    import papermill as pm

    (stage / "notebooks").mkdir(parents=True, exist_ok=True)

    def execute(name: str) -> Path:
        target = stage / "notebooks" / f"{name}.ipynb"
        t0 = time.perf_counter()
        pm.execute_notebook(str(src / "notebooks" / f"{name}.ipynb"), str(target), parameters=params,
                            kernel_name="python3", cwd=str(src), progress_bar=False)
        hide_plumbing(target, {str(params["run_dir"]): f"runs/{params['preset']}", str(src.resolve()): "."})
        if progress:
            print(f"executed {name} in {time.perf_counter() - t0:.0f}s", file=sys.stderr)
        return target

    # threads suffice: papermill waits on a kernel process per notebook (nbclient keeps one
    # event loop per thread)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        return list(pool.map(execute, NOTEBOOKS))


def stage_tables(run_dir: Path, stage: Path) -> list[Path]:
    """Copy the study's tables (and the verdicts' forest plot) next to the notebooks
    (``notebooks/data/``) so every chapter links its full table as a download."""
    data = stage / "notebooks" / "data"
    data.mkdir(parents=True, exist_ok=True)
    copied = []
    for csv in sorted(run_dir.glob("*.csv")) + sorted(run_dir.glob("forest.png")):
        shutil.copy2(csv, data / csv.name)
        copied.append(data / csv.name)
    return copied


GENERATED = Path("book") / "_generated"


def markdown_cell(text) -> str:
    """One table cell: a single line with its pipes escaped."""
    return " ".join(str(text).split()).replace("|", "\\|")


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(markdown_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def link_code(code: str) -> str:
    """The official-code cell with its address as a link: ``https://github.com/o/r (note)``
    -> ``[o/r](https://github.com/o/r) (note)``."""
    found = re.search(r"https?://\S+", code)
    if not found:
        return code
    url = found.group(0)
    label = re.sub(r"^https?://(www\.)?(github\.com/)?", "", url).rstrip("/")
    return f"{code[:found.start()]}[{label}]({url}){code[found.end():]}"


def fidelity_markdown(registry) -> str:
    """:func:`re_analysis.fidelity.fidelity_table` of ``registry`` as a markdown table, one row
    per deviation; the paper and the linked official code stand on each method's first row."""
    from .fidelity import fidelity_table

    rows, previous = [], None
    for r in fidelity_table(registry).itertuples():
        first = r.method != previous
        rows.append([f"`{r.method}`" if first else "", r.paper if first else "", link_code(r.code) if first else "",
                     r.deviation, r.reason])
        previous = r.method
    return markdown_table(["method", "paper", "official code", "what still differs", "why"], rows)


def presets_markdown() -> str:
    """One row per shipped preset: name, dataset, seeds, defense x attack pairs, description."""
    from .study import list_presets, load_preset

    rows = []
    for name in list_presets():
        p = load_preset(name)
        rows.append([f"`{name}`", p.dataset, ", ".join(map(str, p.seeds)), len(p.pairs),
                     p.description])
    return markdown_table(["preset", "dataset", "seeds", "defense x attack pairs", "what it covers"], rows)


def rules_markdown() -> str:
    """The verdict rules' version and each non-inferiority margin with its value and reason
    (:data:`re_analysis.verdicts.MARGINS`), as the method chapter states them."""
    from .verdicts import ALPHA, CEILING, MARGINS, MIN_SEEDS, RULES_VERSION

    rows = [[f"`{name}`", f"{m.value:g}", m.reason] for name, m in MARGINS.items()]
    rows += [["level", f"{1 - ALPHA:g}", "each row's interval; Holm's correction spends the same 5% over a claim's rows "
                                         "before 'not supported'"],
             ["seeds", str(MIN_SEEDS), "fewer seeds give no verdict: no seed-level interval to speak of"],
             ["ceiling", f"{CEILING:g}", "an arm at this share of its judge's ceiling is said to have little room (a note, "
                                         "never a gate)"]]
    return (f"Verdict rules, version **{RULES_VERSION}** (written into every row of `verdicts.csv`).\n\n"
            + markdown_table(["setting", "value", "why"], rows))


def write_generated(stage: str | Path) -> list[Path]:
    """Write the tables the method chapter includes, generated from the code, into
    ``stage/book/_generated/``: ``attacks_fidelity.md``, ``defenses_fidelity.md``,
    ``presets.md`` and ``rules.md``. Only the staged copy gets them (the sources stay unchanged)."""
    from .attacks import ATTACKS
    from .defenses import DEFENSES

    folder = Path(stage) / GENERATED
    folder.mkdir(parents=True, exist_ok=True)
    pages = {"attacks_fidelity.md": fidelity_markdown(ATTACKS), "defenses_fidelity.md": fidelity_markdown(DEFENSES),
             "presets.md": presets_markdown(), "rules.md": rules_markdown()}
    for name, text in pages.items():
        (folder / name).write_text(text, encoding="utf-8")
    return [folder / name for name in pages]


def write_verdict_page(run_dir: str | Path, stage: str | Path, preset: str) -> list[Path]:
    """The answer on the first page: the forest plot of the verdicts (primary judge and attack)
    and one sentence per verdict, written into ``stage/book/_generated/`` (``forest.png``,
    ``verdicts.md``, which the introduction includes); a study without verdicts gets a line
    saying so."""
    import matplotlib

    matplotlib.use("Agg")
    import pandas as pd

    from .report.forest import forest_caption, forest_plot, verdict_sentences

    run_dir, folder = Path(run_dir), Path(stage) / GENERATED
    folder.mkdir(parents=True, exist_ok=True)
    page = folder / "verdicts.md"
    if not (run_dir / "verdicts.csv").is_file() or not (run_dir / "verdict_summary.csv").is_file():
        page.write_text("This study gives no verdict (it ran no Random Erasing target beside an undefended one).\n",
                        encoding="utf-8")
        return [page]
    verdicts = pd.read_csv(run_dir / "verdicts.csv")
    summary = pd.read_csv(run_dir / "verdict_summary.csv")
    results = pd.read_csv(run_dir / "results.csv")
    attack = summary["attack"].dropna().iloc[0] if summary["attack"].notna().any() else None
    fig = forest_plot(verdicts, attack=attack)
    fig.savefig(folder / "forest.png", dpi=110, bbox_inches="tight")
    shutil.copy2(folder / "forest.png", run_dir / "forest.png")  # the conclusions chapter offers it as a download
    caption = forest_caption(results, attack, preset)
    page.write_text(f"```{{figure}} _generated/forest.png\n:name: forest-plot\n:width: 100%\n\n{caption}\n```\n\n"
                    + verdict_sentences(summary) + "\n", encoding="utf-8")
    return [folder / "forest.png", page]


AUDIT_REPORT = "audit-report.html"  # copied to the site's root (html_extra_path), where the chapter's frame loads it


AUDIT_MARKER = "<!-- audit-example: the book's build puts the example's results here -->"


def write_audit_page(paths: dict, stage: str | Path) -> list[Path]:
    """The "Audit your own model" chapter's example, from :func:`re_analysis.audit.example_audit`'s
    ``paths``: the command that audited the exported model, its verdict, its leakage table and
    the full report (``stage/book/_generated/extra/audit-report.html``, served at the site's
    root), put where the staged chapter's marker stands (the checkout's chapter reads whole
    without them)."""
    import pandas as pd

    from .audit import audit_summary_lines
    from .report.audit import class_names, leak_table, leaked_classes

    folder = Path(stage) / GENERATED
    extra = folder / "extra"
    extra.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paths["report"], extra / AUDIT_REPORT)
    audit_dir = Path(paths["report"]).parent
    summary = pd.read_csv(audit_dir / "summary.csv")
    judgements = pd.read_csv(audit_dir / "judgements.csv")
    record = run_record(audit_dir, "audit.json")
    table = leak_table(summary)
    leaked = leaked_classes(judgements, names=class_names(audit_dir))
    command = (f"re-analysis audit --model model.pt --private digits/private --public digits/public "
               f"--channels 1 --preset {record['preset'].removeprefix('audit-')} --out audit")
    verdict = [line for line in audit_summary_lines(audit_dir) if line.startswith("verdict:")]
    text = (
        "The command (run in the example's folder; `re-analysis audit --example --out DIR` writes the folders, trains "
        "and exports the model, then runs it):\n\n"
        f"```bash\n{command}\n```\n\n"
        + (f"Its last line:\n\n```text\n{verdict[0]}\n```\n\n" if verdict else "")
        + "What the report found, per judge (attack accuracy with its 95% interval over the attacked identities, the "
        "chance rate of unoptimised prior samples, the judge's ceiling on held-out private images):\n\n"
        + markdown_table(list(table.columns), table.values.tolist()) + "\n\n"
        + markdown_table(list(leaked.columns), leaked.values.tolist()) + "\n\n"
        f'The full report, as `re-analysis audit` wrote it (<a href="../{AUDIT_REPORT}">open it on its own page</a>):\n\n'
        f'<iframe src="../{AUDIT_REPORT}" title="audit report" style="width:100%;height:900px;border:1px solid #ccc">'
        "</iframe>\n")
    chapter = Path(stage) / "book" / "audit.md"
    source = chapter.read_text(encoding="utf-8")
    if AUDIT_MARKER not in source:
        raise ReAnalysisError(f"{chapter} lacks the line {AUDIT_MARKER!r} where the audit example goes; restore it")
    chapter.write_text(source.replace(AUDIT_MARKER, text), encoding="utf-8")
    return [extra / AUDIT_REPORT, chapter]


def provenance_markdown(report, origin: str) -> str:
    """Where the book's numbers come from: the design, its seeds and identities, the units in
    and still missing, the code commits and machines that computed them, the core-hours spent."""
    from .study import load_preset

    rec = report.record
    view_preset = rec.get("preset", "?")
    try:
        p = load_preset(view_preset)
        from .verdicts import RULES_VERSION

        seeds = f"{len(p.seeds)} seed{'s' if len(p.seeds) > 1 else ''}"
        design = (f"{seeds} x {'all' if p.classes is None else p.classes} private identities x {p.per_class} "
                  f"reconstruction{'s' if p.per_class > 1 else ''} each, arms {', '.join(p.defenses)}, primary attack "
                  f"`{p.primary_attack}`, primary judge `{p.primary_judge}`, verdict rules "
                  + (f"{p.rules} (registered)" if p.rules else f"{RULES_VERSION} (this release's)"))
    except ReAnalysisError:
        design = "a design not shipped with this release"
    commits = ", ".join(f"`{c[:10]}`" for c in rec.get("commits", [])) or "n/a"
    lines = [f"**Where these numbers come from.** {origin} The design: preset `{view_preset}` "
             f"(design hash `{rec.get('design_hash', '?')}`), {design}.",
             f"It holds **{len(report.units)} of {len(report.units) + len(report.missing)} units** (one arm on one "
             f"seed each: its target, attacks, judgements and gap), computed by code {commits} on "
             f"{', '.join(rec.get('machines', [])) or 'n/a'} in {rec.get('unit_core_hours', 0):.1f} core-hours of "
             f"steps; every file is checked against its sha256 before the book reads it."]
    if report.missing:
        lines.append(f"Units still missing: {', '.join(report.missing[:12])}"
                     f"{f' and {len(report.missing) - 12} more' if len(report.missing) > 12 else ''}. A claim whose "
                     "arms lack units gets no verdict yet (its interim reading is in `verdict_summary.csv`).")
    return " ".join(lines) + "\n"


def write_provenance_page(report, stage: str | Path, origin: str, reproduction: dict | None) -> list[Path]:
    """``_generated/provenance.md`` (the introduction includes it): the bundle's provenance and
    the reproduction box of this build."""
    from .reproduce import reproduction_markdown

    folder = Path(stage) / GENERATED
    folder.mkdir(parents=True, exist_ok=True)
    text = provenance_markdown(report, origin)
    if reproduction is not None:
        text += "\n" + reproduction_markdown(reproduction)
    page = folder / "provenance.md"
    page.write_text(text, encoding="utf-8")
    return [page]


def build_book(preset: str | None = "quick", run_dir: str | Path | None = None, source: str | Path | None = None,
               build_dir: str | Path = "_build", device: str = "auto", progress: bool = True,
               workers: int | None = None, bundle: str | Path | None = None, reproduce: bool = True) -> Path:
    """The book in ``build_dir/html``; returns the path of ``index.html``.

    From a published ``bundle`` (a folder of :mod:`re_analysis.publish`): verify it, stage it,
    recompute one small piece live (:mod:`re_analysis.reproduce`), execute the notebooks over it
    and render. Without one: run ``preset``'s study from scratch (cached steps reused), publish
    it beside its run folder, and render from that bundle, the same way.
    """
    from .publish import publish_study, stage_bundle
    from .study import load_preset, run_study

    src = find_source(source)
    build_dir = Path(build_dir).resolve()
    if bundle is None:
        if preset is None:
            raise ReAnalysisError("name a preset to compute (--preset) or a published bundle to render (--bundle)")
        p = load_preset(preset, device=device, workers=workers)
        study_dir = Path(run_dir or src / "runs" / preset).resolve()
        run_study(p, study_dir, progress=progress)
        bundle = publish_study(study_dir, study_dir.parent / f"{study_dir.name}-published", p)
        origin = "This build computed every number from scratch on this machine (preset `" + str(preset) + "`)."
    else:
        bundle = Path(bundle).resolve()
        origin = f"This build rendered the published study in `{bundle.name}` without recomputing it."
    view = build_dir / "study"
    report = stage_bundle(bundle, view)
    p = load_preset(view / "preset.yaml", device=device)
    reproduction = None
    if reproduce:
        from .reproduce import reproduce_piece

        reproduction = reproduce_piece(view, p, build_dir / "reproduction", progress=False)
    stage = build_dir / "stage"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for item in ("_config.yml", "_toc.yml", "book", "README.md"):
        if (src / item).is_dir():
            shutil.copytree(src / item, stage / item)
        elif (src / item).is_file():
            shutil.copy2(src / item, stage / item)
    write_generated(stage)
    write_verdict_page(view, stage, report.preset)
    write_provenance_page(report, stage, origin, reproduction)
    from .audit import example_audit

    write_audit_page(example_audit(build_dir / "audit-example", progress=progress), stage)
    execute_notebooks(src, stage, {"run_dir": str(view), "preset": report.preset, "device": device}, progress,
                      workers=p.workers)
    stage_tables(view, stage)
    out = build_dir / "book-output"
    proc = subprocess.run(builder_command() + ["build", str(stage), "--path-output", str(out)], capture_output=True,
                          text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    if proc.returncode != 0 or not (out / "_build" / "html" / "index.html").is_file():
        raise ReAnalysisError(f"jupyter-book build failed (exit {proc.returncode}); its last lines: "
                              + " | ".join(proc.stdout.strip().splitlines()[-5:] + proc.stderr.strip().splitlines()[-5:]))
    html = build_dir / "html"
    tmp = build_dir / ".html.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(out / "_build" / "html", tmp)
    if html.exists():
        shutil.rmtree(html)
    os.replace(tmp, html)
    return html / "index.html"
