"""Start-up cost of each rule job: what importing its script's imports costs, and of
planning (``snakemake -n``), in this tree against a baseline tree (default: the commit
before the reorganisation, checked out at /tmp/base), measured in the same run.

Every rule job is a new Python process that runs one script of scripts/*.py (Snakemake
``script:``). For each script, what the job imports is timed in a fresh interpreter with
the tree's ``src`` first on PYTHONPATH: the script's module-level import statements (read
with ``ast``), then the import statements inside the casebook functions it calls (the
functions it imports, and every casebook function they call, followed statically: every
branch counts, so this is an upper bound), so an import moved into a function the job
runs still counts. A script that dispatches on the task family (``stage(task, "train")``,
casebook.tasks) gets one row per family, with that family's stage as one more call. The
time excludes the interpreter's own start-up; it is the best of ``--rounds`` (rounds
alternate between the trees, so that machine load affects both alike). The heavy modules
are those of HEAVY in ``sys.modules`` afterwards.

The weighted total is the sum over the jobs of the default run of their script's import
time: the jobs, and each job's case study (hence its family), are read from
``snakemake -n`` in a fresh copy of each tree (Snakefile, workflow, scripts, config), and
each rule's script from its ``script:`` in workflow/rules. The same dry run, from scratch,
is timed (``--rounds`` runs per tree, alternating), and run once more with
``-X importtime`` to list the casebook and heavy modules that planning imports.

    .venv/bin/python benchmarks/job_startup.py [--baseline /tmp/base] [--rounds 3]
    .venv/bin/python benchmarks/job_startup.py --jobs-from new=dry_new.txt --jobs-from old=dry_old.txt --no-dryrun

``--jobs-from TREE=FILE`` reads a saved ``snakemake -n`` output instead of running one;
``--no-dryrun`` skips timing the dry runs (job counts then need ``--jobs-from``).
"""

from __future__ import annotations

import argparse
import ast
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "monai", "torchio", "SimpleITK", "sklearn", "matplotlib", "pandas")
SHORT = {"torch": "torch", "monai": "monai", "torchio": "tio", "SimpleITK": "sitk", "sklearn": "skl", "matplotlib": "mpl", "pandas": "pd"}
PROBE = (
    "import sys, time\n"
    "_t0 = time.perf_counter()\n"
    "{code}\n"
    "_t1 = time.perf_counter()\n"
    "print(repr((_t1 - _t0, [m for m in {heavy!r} if m in sys.modules])))\n"
)


class Sources:
    """The casebook modules of one tree (``src/casebook``), parsed on demand."""

    def __init__(self, src: Path):
        self.src = src
        self.cache: dict[str, tuple[str, ast.Module] | None] = {}

    def module(self, name: str) -> tuple[str, ast.Module] | None:
        if name not in self.cache:
            base = self.src / name.replace(".", "/")
            path = next((p for p in (base.with_suffix(".py"), base / "__init__.py") if p.is_file()), None)
            self.cache[name] = None if path is None else (source := path.read_text(), ast.parse(source))
        return self.cache[name]

    def function(self, module: str, name: str) -> ast.FunctionDef | None:
        parsed = self.module(module)
        for node in parsed[1].body if parsed else ():
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return node
        return None


def _bindings(nodes) -> dict[str, tuple[str, str | None]]:
    """Names that import statements bind to casebook modules: name -> (module, attribute or None)."""
    out = {}
    for node in nodes:
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("casebook"):
                    out[alias.asname or alias.name.split(".")[0]] = (alias.name if alias.asname else alias.name.split(".")[0], None)
        elif isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("casebook"):
            for alias in node.names:
                out[alias.asname or alias.name] = (node.module, alias.name)
    return out


def reachable_imports(sources: Sources, entries: list[tuple[str, str]]) -> list[str]:
    """The import statements that the functions ``entries`` ((module, name)) may run when
    called: those inside them and inside every casebook function they call, followed
    statically (a call of a name the module defines or imports from casebook, or of an
    attribute of an imported casebook module). An upper bound: every branch counts."""
    seen: set[tuple[str, str]] = set()
    found: list[str] = []

    def callee(module: str, binding: tuple[str, str | None], attr: str | None) -> tuple[str, str] | None:
        target, name = binding
        if name is not None and sources.function(target, name) is not None:
            return (target, name) if attr is None else None
        as_module = target if name is None else f"{target}.{name}"
        if attr is not None and sources.module(as_module) is not None:
            return as_module, attr
        return None

    def visit(module: str, name: str) -> None:
        if (module, name) in seen:
            return
        seen.add((module, name))
        func = sources.function(module, name)
        if func is None:
            return
        source, tree = sources.module(module)
        local = {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}
        inner = [n for n in ast.walk(func) if isinstance(n, (ast.Import, ast.ImportFrom))]
        for node in inner:
            text = ast.get_source_segment(source, node)
            if not getattr(node, "level", 0) and text not in found:
                found.append(text)
        bindings = {**_bindings(tree.body), **_bindings(inner)}
        for node in ast.walk(func):
            if not isinstance(node, ast.Call):
                continue
            target = None
            if isinstance(node.func, ast.Name):
                if node.func.id in local:
                    target = (module, node.func.id)
                elif node.func.id in bindings:
                    target = callee(module, bindings[node.func.id], None)
            elif isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name) and node.func.value.id in bindings:
                target = callee(module, bindings[node.func.value.id], node.func.attr)
            if target:
                visit(*target)

    for entry in entries:
        visit(*entry)
    return found


def script_imports(path: Path, sources: Sources) -> tuple[str, list[str], list[tuple[str, str]]]:
    """A rule script's module-level import statements, the stage names it dispatches
    through ``stage(task, "<name>")`` (empty if it calls none), and the casebook
    functions it imports ((module, name): where the job's calls start)."""
    source = path.read_text()
    tree = ast.parse(source)
    imports = [
        node
        for node in tree.body
        if isinstance(node, (ast.Import, ast.ImportFrom)) and not (isinstance(node, ast.ImportFrom) and node.module == "__future__")
    ]
    stages = [
        node.args[1].value
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and getattr(node.func, "id", getattr(node.func, "attr", None)) == "stage"
        and len(node.args) == 2
        and isinstance(node.args[1], ast.Constant)
    ]
    entries = [binding for binding in _bindings(imports).values() if binding[1] and sources.function(*binding)]
    return "\n".join(ast.get_source_segment(source, node) for node in imports), stages, entries


def rule_scripts(tree: Path) -> dict[str, str]:
    """Rule name -> script file name (``train.py``), from the tree's workflow/rules."""
    out = {}
    for smk in sorted((tree / "workflow/rules").rglob("*.smk")):
        for match in re.finditer(r"^(?:local)?rule (\w+):\n(.*?)(?=^\S|\Z)", smk.read_text(), re.M | re.S):
            script = re.search(r"^\s+script:\s*\n\s+[\"']([^\"']+)[\"']", match.group(2), re.M)
            if script:
                out[match.group(1)] = Path(script.group(1)).name
    return out


def casestudy_tasks(tree: Path) -> dict[str, str]:
    """Case-study name -> task family, for the case studies of the tree's default config."""
    config = yaml.safe_load((tree / "config/config.yaml").read_text())
    out = {}
    for path in config["casestudies"]:
        cs = yaml.safe_load((tree / path).read_text())
        out[cs["name"]] = cs.get("task", "classification")
    return out


def dryrun_jobs(text: str) -> list[tuple[str, str | None]]:
    """(rule, case study or None) of every job in ``snakemake -n`` output."""
    jobs = []
    # grouped jobs (``group:``) are printed indented under their group
    for block in re.split(r"^(?=[ \t]*(?:local)?rule \w+:$)", text, flags=re.M):
        head = re.match(r"[ \t]*(?:local)?rule (\w+):$", block, re.M)
        if head:
            cs = re.search(r"^\s+wildcards:.*?\bcs=([^,\s]+)", block, re.M)
            jobs.append((head.group(1), cs.group(1) if cs else None))
    return jobs


def env_for(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(src) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def copy_tree(tree: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    for part in ("Snakefile", "workflow", "scripts", "config"):
        (shutil.copytree if (tree / part).is_dir() else shutil.copy2)(tree / part, dest / part)
    return dest


def timed_dryrun(tree: Path, workdir: Path) -> tuple[float, str]:
    """Seconds of ``snakemake -n`` in ``workdir`` (a copy of ``tree``) from scratch, and its output.
    A failed run is retried once on a fresh copy (others may have been editing the tree)."""
    for attempt in (1, 2):
        shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--cores", "1"],
            cwd=workdir,
            env=env_for(tree / "src"),
            capture_output=True,
            text=True,
        )
        seconds = time.perf_counter() - start
        if not done.returncode:
            return seconds, done.stdout + done.stderr
        if attempt == 1:
            shutil.rmtree(workdir)
            copy_tree(tree, workdir)
    raise RuntimeError(f"snakemake -n failed in a copy of {tree}:\n{(done.stdout + done.stderr)[-3000:]}")


def planning_imports(workdir: Path, src: Path) -> tuple[list[str], list[str]]:
    """The casebook modules and the heavy modules that ``snakemake -n`` imports (``-X importtime``)."""
    shutil.rmtree(workdir / ".snakemake", ignore_errors=True)
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "snakemake", "-n", "--cores", "1"],
        cwd=workdir,
        env=env_for(src),
        capture_output=True,
        text=True,
        check=True,
    )
    names = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    return sorted(n for n in names if n.startswith("casebook")), [m for m in HEAVY if m in names]


def probe(code: str, src: Path) -> tuple[float, list[str]]:
    """Seconds to run ``code`` in a fresh interpreter (after its start-up), and the heavy modules loaded."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(code=code, heavy=HEAVY)],
        cwd=tempfile.gettempdir(),
        env=env_for(src),
        capture_output=True,
        text=True,
    )
    if done.returncode:
        raise RuntimeError(f"{code!r} with PYTHONPATH={src}:\n{done.stderr}")
    seconds, heavy = ast.literal_eval(done.stdout.strip().splitlines()[-1])
    return seconds, heavy


def guarded(statements: list[str]) -> str:
    """Import statements found inside functions, each allowed to fail as it may in its
    function (an optional dependency)."""
    return "".join(f"\ntry:\n    {text}\nexcept ImportError:\n    pass" for text in statements)


def variants(tree: Path, families: list[str]) -> dict[tuple[str, str | None], str]:
    """(script, family or None) -> the code to time: the script's imports and those its
    calls may make; a script that dispatches on the family gets one variant per family,
    with that family's stage (``casebook.tasks.<family>.stages``) as one more call."""
    sources = Sources(tree / "src")
    out = {}
    for path in sorted((tree / "scripts").glob("*.py")):
        code, stages, entries = script_imports(path, sources)
        if not stages:
            out[(path.name, None)] = code + guarded(reachable_imports(sources, entries))
        for fam in families if stages else ():
            module = f"casebook.tasks.{fam}.stages"
            calls = [(module, name) for name in stages]
            out[(path.name, fam)] = f"{code}\nimport {module}" + guarded(reachable_imports(sources, entries + calls))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, default=Path("/tmp/base"), help="the baseline tree (its src/ and scripts/)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--jobs-from", action="append", default=[], metavar="TREE=FILE", help="TREE is new or old: saved `snakemake -n` output"
    )
    parser.add_argument("--no-dryrun", action="store_true", help="do not time `snakemake -n` (needs --jobs-from for both trees)")
    args = parser.parse_args()
    trees = {"new": REPO, "old": args.baseline.resolve()}
    saved = dict(item.split("=", 1) for item in args.jobs_from)

    # planning: `snakemake -n` from scratch in a fresh copy of each tree, alternating
    dry_times: dict[str, list[float]] = {name: [] for name in trees}
    dry_text: dict[str, str] = {name: Path(saved[name]).read_text() for name in saved}
    if not args.no_dryrun:
        tmp = Path(tempfile.mkdtemp(prefix="casebook-job-startup-"))
        try:
            copies = {name: copy_tree(tree, tmp / name) for name, tree in trees.items()}
            for _ in range(args.rounds):
                for name, tree in trees.items():
                    seconds, text = timed_dryrun(tree, copies[name])
                    dry_times[name].append(seconds)
                    dry_text.setdefault(name, text)
            planning = {name: planning_imports(copies[name], tree / "src") for name, tree in trees.items()}
        finally:
            shutil.rmtree(tmp)
    missing = set(trees) - set(dry_text)
    if missing:
        parser.error(f"no job list for {sorted(missing)}: give --jobs-from or let the dry run run")

    # the jobs of the default run: (script, family) -> count, per tree
    counts: dict[str, Counter] = {}
    for name, tree in trees.items():
        scripts, tasks = rule_scripts(tree), casestudy_tasks(tree)
        counts[name] = Counter()
        for rule, cs in dryrun_jobs(dry_text[name]):
            if rule in scripts:
                _, stages, _ = script_imports(tree / "scripts" / scripts[rule], Sources(tree / "src"))
                counts[name][(scripts[rule], tasks.get(cs) if stages else None)] += 1

    # imports, alternating between the trees round by round
    families = sorted({fam for name in trees for fam in casestudy_tasks(trees[name]).values()})
    codes = {name: variants(tree, families) for name, tree in trees.items()}
    best: dict[str, dict] = {name: {} for name in trees}
    heavy: dict[str, dict] = {name: {} for name in trees}
    keys = sorted(set(codes["new"]) | set(codes["old"]), key=lambda k: (k[0], k[1] or ""))
    for _ in range(args.rounds):
        for key in keys:
            for name, tree in trees.items():
                if key in codes[name]:
                    seconds, mods = probe(codes[name][key], tree / "src")
                    best[name][key] = min(seconds, best[name].get(key, float("inf")))
                    heavy[name][key] = mods

    def label(key):
        return key[0] if key[1] is None else f"{key[0]} [{key[1]}]"

    def mods(name, key):
        return ",".join(SHORT[m] for m in heavy[name][key]) or "-" if key in heavy[name] else ""

    print(f"load average (1, 5, 15 min) at the end: {' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} cores")
    print(
        f"import time of each job's imports, best of {args.rounds} (s); jobs = jobs of the default run; heavy: {', '.join(f'{v}={k}' for k, v in SHORT.items())}"
    )
    print(f"{'script':34s} {'jobs old':>8s} {'jobs new':>8s} {'old s':>7s} {'new s':>7s} {'ratio':>6s}  {'heavy old':30s} heavy new")
    for key in keys:
        old, new = best["old"].get(key), best["new"].get(key)
        ratio = f"{new / old:6.2f}" if old and new else ""
        fmt = lambda v: f"{v:7.2f}" if v is not None else f"{'':7s}"  # noqa: E731
        print(
            f"{label(key):34s} {counts['old'][key] or '':>8} {counts['new'][key] or '':>8} {fmt(old)} {fmt(new)} {ratio:>6s}  {mods('old', key):30s} {mods('new', key)}"
        )
    total = {name: sum(n * best[name][key] for key, n in counts[name].items()) for name in trees}
    jobs = {name: sum(counts[name].values()) for name in trees}
    print(
        f"weighted total (jobs x import time): old {total['old']:.1f} s over {jobs['old']} jobs, new {total['new']:.1f} s over {jobs['new']} jobs;"
        f" ratio new/old {total['new'] / total['old']:.3f}"
    )
    if not args.no_dryrun:
        old, new = dry_times["old"], dry_times["new"]
        print(
            f"snakemake -n from scratch ({args.rounds} runs each, s): old {' '.join(f'{t:.2f}' for t in old)}, new {' '.join(f'{t:.2f}' for t in new)};"
            f" ratio new/old (best) {min(new) / min(old):.3f}"
        )
        for name in trees:
            casebook, heavy_mods = planning[name]
            print(f"snakemake -n imports ({name}): {', '.join(casebook)}; heavy: {', '.join(heavy_mods) or 'none'}")


if __name__ == "__main__":
    main()
