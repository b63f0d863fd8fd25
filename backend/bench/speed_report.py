"""``python -m backend.bench.speed_report [folder]``: join the speed sections into one report.

Each benchmark writes its own section file into ``results/speed/`` (one device run can write them
all): ``single.json`` (``bench speed``: the single-job table against the bound), ``whole.json``
(``tools/device/full_run.py``: the default 10k-step schedule timed whole), ``throughput.json``
(``bench throughput``: props per hour with several jobs on one GPU) and ``cost.json`` (``bench
cost``: the time and memory estimator's error on held-out settings) and ``estimate.json`` (``bench
estimate``: whole jobs, the real command in fresh processes, against the estimate it prints). Each carries its own markdown
under ``"table_md"`` next to its data, so this module only orders and joins them: ``report.md`` is
the sections' markdown one after another, ``report.json`` their data under their names. A section
whose file is missing is listed as not run, so a partial run still gives a report that says what it
lacks.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# (file stem, heading) in report order
SECTIONS = (("single", "Single job"), ("whole", "The default schedule timed whole"),
            ("throughput", "Throughput: several jobs on one GPU"), ("cost", "Cost estimate before submit"),
            ("estimate", "Whole jobs against the estimate"))


def load_sections(folder: Path) -> dict[str, dict]:
    """The section files that exist in ``folder``, by stem; a file without ``table_md`` is an error
    that names it (a section must say what it measured)."""
    found = {}
    for stem, _ in SECTIONS:
        path = folder / f"{stem}.json"
        if not path.is_file():
            continue
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or not isinstance(data.get("table_md"), str):
            raise ValueError(f"{path}: a section file must be a JSON object with a 'table_md' string")
        found[stem] = data
    return found


def render(sections: dict[str, dict]) -> str:
    lines = ["# Speed report", ""]
    missing = [heading for stem, heading in SECTIONS if stem not in sections]
    if missing:
        lines += ["Not in this report (their section files were not written): " + "; ".join(missing) + ".", ""]
    for stem, heading in SECTIONS:
        if stem in sections:
            body = sections[stem]["table_md"].strip()
            # A section's own level-1 title becomes a level-3 line under the report's heading.
            if body.startswith("# "):
                first, _, rest = body.partition("\n")
                body = "### " + first[2:] + "\n" + rest
            lines += [f"## {heading}", "", body, ""]
    return "\n".join(lines).rstrip() + "\n"


def assemble(folder: Path | str = "results/speed") -> dict[str, dict]:
    """Write ``report.md`` and ``report.json`` in ``folder`` from its section files; returns them."""
    folder = Path(folder)
    sections = load_sections(folder)
    (folder / "report.md").write_text(render(sections))
    report = {"sections": [stem for stem, _ in SECTIONS if stem in sections],
              **{stem: data for stem, data in sections.items()}}
    (folder / "report.json").write_text(json.dumps(report, indent=2))
    return sections


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    folder = Path(argv[0] if argv else "results/speed")
    sections = assemble(folder)
    print(f"{folder / 'report.md'}: sections {', '.join(sections) or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
