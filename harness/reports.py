"""Writing an analysis result: each table as CSV and markdown, a report that shows them with
the figures, and the summary as JSON."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from tabulate import tabulate

from harness.analysis import AnalysisResult
from harness.errors import HarnessError

#: Tables longer than this are linked from the report, not inlined (per-image tables).
REPORT_MAX_ROWS = 40


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown rendering, four significant digits for floats."""
    return tabulate(table, headers="keys", tablefmt="github", showindex=False, floatfmt=".4g", missingval="")


def write_result(result: AnalysisResult, out_dir: str | Path, name: str) -> dict[str, Any]:
    """Write ``result`` into ``out_dir/name/`` and return what was written.

    Files: ``<table>.csv`` and ``<table>.md`` per table, ``summary.json`` and ``report.md``
    (summary, the short tables inline, links to the long ones, every figure). Figures stay
    where the analysis wrote them (normally the same folder); the report links them by
    relative path. Returns ``{"report", "summary", "tables": {table: {"csv", "markdown"}},
    "figures": {figure: path}}`` with string paths, ready for JSON.
    """
    folder = Path(out_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    written: dict[str, Any] = {"tables": {}, "figures": {}}
    lines = [f"# Analysis `{name}`", "", "## Summary", "", "```json",
             json.dumps(result.summary, indent=2, sort_keys=True, default=str), "```", ""]

    for table_name, table in result.tables.items():
        csv_path, md_path = folder / f"{table_name}.csv", folder / f"{table_name}.md"
        table.to_csv(csv_path, index=False)
        rendered = markdown_table(table)
        md_path.write_text(rendered + "\n")
        written["tables"][table_name] = {"csv": str(csv_path), "markdown": str(md_path)}
        lines += [f"## Table `{table_name}`", ""]
        if len(table) <= REPORT_MAX_ROWS:
            lines += [rendered, ""]
        lines += [f"{len(table)} rows: [{csv_path.name}]({csv_path.name}), [{md_path.name}]({md_path.name})", ""]

    if result.figures:
        lines += ["## Figures", ""]
    for figure_name, figure_path in result.figures.items():
        figure_path = Path(figure_path)
        if not figure_path.is_file():
            raise HarnessError(f"analysis '{name}' lists figure '{figure_name}' at {figure_path}, which does not exist")
        relative = Path(os.path.relpath(figure_path.resolve(), folder.resolve())).as_posix()
        lines += [f"### {figure_name}", "", f"![{figure_name}]({relative})", ""]
        written["figures"][figure_name] = str(figure_path)

    summary_path = folder / "summary.json"
    summary_path.write_text(json.dumps(result.summary, indent=2, sort_keys=True, default=str) + "\n")
    report_path = folder / "report.md"
    report_path.write_text("\n".join(lines))
    written["summary"] = str(summary_path)
    written["report"] = str(report_path)
    return written
