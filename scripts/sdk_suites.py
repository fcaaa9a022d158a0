#!/usr/bin/env python
"""Run the anthropic and openai SDKs' own test suites against budgetclient's clients.

For each SDK: find the installed version, download that version's sdist from the package index
(it ships ``tests/``), build a dedicated venv under the cache dir with the same SDK (and runtime
dependency) versions as this interpreter, budgetclient editable from this repository and the
suite's test dependencies, then run the suite twice with ``-n 2``: raw, and with
``anthropic.Anthropic``/``AsyncAnthropic`` (``openai.OpenAI``/``AsyncOpenAI``) rebound to
``bc.*`` by ``scripts/sdk_suites_plugin.py`` (``BUDGETCLIENT_LEDGER=memory://`` in both runs).

Every test that passes raw and does not pass wrapped is rerun once both ways (a flake on either
side is reported, not counted); a confirmed difference must be listed with its reason in
``scripts/sdk_suites_expected.toml`` or the script exits 1. A listed test that passes wrapped is
reported as stale. A summary line per SDK is printed and ``summary.json`` written to the cache dir.

Runs use ``--dist loadfile``: the suites share module-level and session clients between tests, and
budgetclient keeps per-client conversation state (drift), so a file's tests must run in one worker
in file order for wrapped outcomes to be reproducible; reruns run whole files for the same reason.

``tests/api_resources`` is not run: it needs a mock API server on 127.0.0.1:4010 fed with the
API's OpenAPI spec. ``@stoplight/prism-cli`` (5.14) installs from npm, but neither sdist ships a spec
(openai's ``scripts/mock`` expects ``api_reference/openapi.transformed.yml``, which is only in the
openai-python repository; the anthropic spec is not published), so there is nothing to serve.

Usage (from the repository root):
    python scripts/sdk_suites.py                      # both SDKs, full runs
    python scripts/sdk_suites.py --sdk openai
    python scripts/sdk_suites.py --only-differences   # wrapped rerun of listed + last differing tests
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.metadata as metadata
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SCRIPTS = REPO / "scripts"
EXPECTED = SCRIPTS / "sdk_suites_expected.toml"
PLUGIN = "sdk_suites_plugin"
SDKS = ("anthropic", "openai")
PASSING = frozenset({"passed"})

# What the suites import beyond the SDK's dev dependency group (extras and direct imports).
EXTRAS = {
    "anthropic": ("aiohttp", "bedrock", "mcp", "webhooks"),
    "openai": ("aiohttp", "realtime", "bedrock", "vertex"),
}
EXTRA_PACKAGES = {
    "anthropic": ("respx", "dirty-equals", "time-machine", "nest_asyncio", "pytest-xdist"),
    # httpx: openai 3.x's legacy-client tests; numpy: its datalib helpers' tests
    "openai": ("httpx", "numpy", "dirty-equals", "time-machine", "nest_asyncio", "pytest-xdist"),
}
# Dev-group entries that are linters, type checkers or stubs, not test dependencies.
NOT_FOR_TESTS = re.compile(r"^(pyright|ruff|ty|mypy|pandas-stubs|boto3-stubs|types-.*|.*-stubs)$", re.I)
ALWAYS = ("pytest-timeout",)  # a wrapped test that hangs must not hang CI


@dataclass
class SuiteResult:
    sdk: str
    version: str
    raw: dict[str, dict[str, str]]
    wrapped: dict[str, dict[str, str]]
    wall: dict[str, float] = field(default_factory=dict)
    differences: dict[str, str] = field(default_factory=dict)  # node id -> wrapped outcome
    flaky: dict[str, str] = field(default_factory=dict)  # node id -> which side flaked
    listed: dict[str, str] = field(default_factory=dict)  # node id -> reason
    unlisted: list[str] = field(default_factory=list)
    stale: list[str] = field(default_factory=list)


def log(message: str) -> None:
    print(f"[sdk-suites {time.strftime('%H:%M:%S')}] {message}", flush=True)


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def req_name(requirement: str) -> str:
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    return norm(match.group(1)) if match else ""


# ---------------------------------------------------------------- sdist and venv


def fetch_sdist(sdk: str, version: str, cache: Path) -> Path:
    """The unpacked sdist of ``sdk==version`` (downloaded once per version)."""
    root = cache / f"{sdk}-{version}"
    src = root / "src"
    if (src / "tests").is_dir():
        return src
    root.mkdir(parents=True, exist_ok=True)
    dl = root / "download"
    archive = dl / f"{sdk}-{version}.tar.gz"
    if not archive.exists():
        log(f"{sdk} {version}: downloading the sdist")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-binary",
                ":all:",
                "--no-deps",
                f"{sdk}=={version}",
                "-d",
                str(dl),
            ],
            check=True,
        )
    tmp = root / "unpack"
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
    shutil.move(str(tmp / f"{sdk}-{version}"), src)
    shutil.rmtree(tmp)
    return src


def host_closure(roots: list[str]) -> dict[str, str]:
    """name -> installed version for ``roots`` and everything they require, in this interpreter."""
    pinned: dict[str, str] = {}
    todo = list(roots)
    while todo:
        name = norm(todo.pop())
        if name in pinned:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        pinned[name] = dist.version
        todo.extend(req_name(r) for r in dist.requires or [])
    return pinned


def lock_versions(src: Path) -> dict[str, str]:
    """Versions the SDK's own CI tests with (uv.lock, else requirements-dev.lock)."""
    lock = src / "uv.lock"
    if lock.exists():
        data = tomllib.loads(lock.read_text(encoding="utf-8"))
        return {norm(p["name"]): p["version"] for p in data.get("package", []) if "version" in p}
    versions: dict[str, str] = {}
    dev = src / "requirements-dev.lock"
    if dev.exists():
        for line in dev.read_text(encoding="utf-8").splitlines():
            match = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)", line)
            if match:
                versions[norm(match.group(1))] = match.group(2)
    return versions


def test_requirements(sdk: str, src: Path, constrained: dict[str, str]) -> tuple[list[str], list[str]]:
    """(pinned, unpinned) requirement lists for the suite: dev group + extra packages.

    Pinned uses the sdist's lock versions; the unpinned list is the fallback if those conflict
    with the host's versions.
    """
    project = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))
    dev = project.get("dependency-groups", {}).get("dev", [])
    wanted = [r for r in dev if isinstance(r, str) and not NOT_FOR_TESTS.match(req_name(r))]
    wanted += [*EXTRA_PACKAGES[sdk], *ALWAYS]
    locked = lock_versions(src)
    pinned: list[str] = []
    unpinned: list[str] = []
    seen: set[str] = set()
    for requirement in wanted:
        name = req_name(requirement)
        if not name or name in seen:
            continue
        seen.add(name)
        if name in constrained:  # the host's version, pinned by the constraints file
            pinned.append(name)
            unpinned.append(name)
            continue
        unpinned.append(requirement)
        pinned.append(f"{name}=={locked[name]}" if name in locked else requirement)
    return pinned, unpinned


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_venv(sdk: str, version: str, src: Path, cache: Path) -> Path:
    """A venv with the host's SDK versions, budgetclient editable and the suite's test deps.

    Reused as long as its stamp (Python, versions, requirements, our pyproject) is unchanged.
    """
    venv = cache / f"{sdk}-{version}" / "venv"
    constraints = host_closure(["budgetclient", sdk, "httpx2"])
    constraints.pop("budgetclient", None)
    pinned, unpinned = test_requirements(sdk, src, constraints)
    stamp = json.dumps(
        {
            "python": sys.version,
            "constraints": constraints,
            "requirements": pinned,
            "extras": EXTRAS[sdk],
            "pyproject": hashlib.sha256((REPO / "pyproject.toml").read_bytes()).hexdigest(),
        },
        sort_keys=True,
    )
    stamp_file = venv / "sdk-suites-stamp.json"
    if stamp_file.exists() and stamp_file.read_text(encoding="utf-8") == stamp:
        return venv
    log(f"{sdk} {version}: building the venv {venv}")
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv_python(venv))
    constraint_file = venv / "constraints.txt"
    constraint_file.write_text(
        "".join(f"{n}=={v}\n" for n, v in sorted(constraints.items())), encoding="utf-8"
    )
    base = [
        py,
        "-m",
        "pip",
        "install",
        "-q",
        "--disable-pip-version-check",
        "-c",
        str(constraint_file),
        "-e",
        f"{REPO}[{sdk}]",
        f"{sdk}[{','.join(EXTRAS[sdk])}]=={version}",
    ]
    if subprocess.run([*base, *pinned]).returncode != 0:
        log(f"{sdk}: the sdist's locked test versions conflict with the host's; installing unpinned")
        subprocess.run([*base, *unpinned], check=True)
    got = subprocess.run(
        [py, "-c", f"import importlib.metadata as m; print(m.version({sdk!r}))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    if got != version:
        raise SystemExit(f"venv has {sdk} {got}, expected {version}")
    stamp_file.write_text(stamp, encoding="utf-8")
    return venv


# ---------------------------------------------------------------- running the suite


def run_suite(
    sdk: str,
    src: Path,
    venv: Path,
    out: Path,
    *,
    wrapped: bool,
    workers: int,
    timeout: int,
    node_ids: list[str] | None = None,
) -> tuple[dict[str, dict[str, str]], float]:
    """Run the suite (or ``node_ids``) once; per-test outcomes and wall time."""
    label = out.stem
    results = out.with_suffix(".json")
    results.unlink(missing_ok=True)
    cmd = [
        str(venv_python(venv)),
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "-p",
        PLUGIN,
        f"--sdk-suites-results={results}",
        f"--timeout={timeout}",
        "-q",
        "--tb=short",
        "-o",
        "console_output_style=classic",
    ]
    # loadfile: a file's tests run in one worker in file order, so tests sharing a module-level
    # client see the same history on every run (worksteal made wrapped outcomes order-dependent)
    cmd += ["-n", str(workers), "--dist", "loadfile"] if workers > 1 else ["-n", "0"]
    if wrapped:
        cmd.append(f"--sdk-suites-swap={sdk}")
    if node_ids is None:
        cmd += ["tests", "--ignore=tests/api_resources"]
    else:
        args_file = out.with_suffix(".args")
        args_file.write_text("\n".join(node_ids) + "\n", encoding="utf-8")
        cmd.append(f"@{args_file}")
    env = {
        **os.environ,
        "BUDGETCLIENT_LEDGER": "memory://",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(SCRIPTS), os.environ.get("PYTHONPATH")])),
    }
    env.pop("PYTEST_ADDOPTS", None)
    log(f"{sdk}: {label} ({'all tests' if node_ids is None else f'{len(node_ids)} tests/files'}), log {out}")
    started = time.monotonic()
    with out.open("w", encoding="utf-8") as stream:
        proc = subprocess.run(cmd, cwd=src, env=env, stdout=stream, stderr=subprocess.STDOUT)
    wall = time.monotonic() - started
    if proc.returncode not in (0, 1) or not results.exists():
        tail = "".join(out.read_text(encoding="utf-8", errors="replace").splitlines(True)[-40:])
        raise SystemExit(f"{sdk} {label}: pytest exited {proc.returncode}\n{tail}")
    outcomes: dict[str, dict[str, str]] = json.loads(results.read_text(encoding="utf-8"))
    counts = Counter(r["outcome"] for r in outcomes.values())
    log(f"{sdk}: {label} done in {wall:.0f}s: {dict(sorted(counts.items()))}")
    return outcomes, wall


# ---------------------------------------------------------------- expectations


def load_expected(path: Path) -> dict[str, dict[str, str]]:
    """SDK -> {node id or pattern (``*`` matches anything): reason}."""
    if not path.exists():
        return {}
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    return {sdk: {str(k): str(v) for k, v in table.items()} for sdk, table in data.items()}


def pattern_regex(key: str) -> re.Pattern[str]:
    return re.compile("^" + ".*".join(re.escape(part) for part in key.split("*")) + "$")


def match_expected(node_id: str, expected: dict[str, str]) -> str | None:
    if node_id in expected:
        return node_id
    for key in expected:
        if "*" in key and pattern_regex(key).match(node_id):
            return key
    return None


def differing(
    raw: dict[str, dict[str, str]], wrapped: dict[str, dict[str, str]], ids: list[str]
) -> dict[str, str]:
    """Tests among ``ids`` that pass raw and do not pass wrapped (missing = not collected)."""
    return {
        i: wrapped.get(i, {"outcome": "missing"})["outcome"]
        for i in ids
        if raw.get(i, {}).get("outcome") in PASSING and wrapped.get(i, {}).get("outcome") not in PASSING
    }


def compare(result: SuiteResult, expected: dict[str, str], selected: list[str]) -> None:
    used: set[str] = set()
    for node_id in sorted(result.differences):
        key = match_expected(node_id, expected)
        if key is None:
            result.unlisted.append(node_id)
        else:
            used.add(key)
            result.listed[node_id] = expected[key]
    for key in sorted(expected):
        if key in used:
            continue
        hits = [i for i in selected if i == key or ("*" in key and pattern_regex(key).match(i))]
        if hits and all(result.wrapped.get(i, {}).get("outcome") in PASSING for i in hits):
            result.stale.append(key)


# ---------------------------------------------------------------- one SDK


def run_sdk(sdk: str, args: argparse.Namespace, expected: dict[str, str]) -> SuiteResult:
    version = metadata.version(sdk)
    cache: Path = args.cache_dir
    src = fetch_sdist(sdk, version, cache)
    venv = ensure_venv(sdk, version, src, cache)
    runs = cache / f"{sdk}-{version}" / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    go = {"workers": args.workers, "timeout": args.timeout}

    if args.only_differences:
        raw_file = runs / "raw.json"
        if not raw_file.exists():
            raise SystemExit(f"{sdk}: no earlier raw run in {runs}; run without --only-differences first")
        raw = json.loads(raw_file.read_text(encoding="utf-8"))
        last = last_summary(cache).get(sdk, {})
        candidates = set(last.get("differences", {})) | set(last.get("flaky", {}))
        candidates |= {i for i in raw if match_expected(i, expected)}
        # whole files, as in the full run: tests share module-level clients within a file
        files = sorted({i.split("::")[0] for i in candidates if i in raw})
        selected = sorted(i for i in raw if i.split("::")[0] in files)
        result = SuiteResult(sdk, version, raw, {})
        if files:
            result.wrapped, result.wall["wrapped"] = run_suite(
                sdk, src, venv, runs / "wrapped-only", wrapped=True, node_ids=files, **go
            )
    else:
        raw, raw_wall = run_suite(sdk, src, venv, runs / "raw", wrapped=False, **go)
        wrapped, wrapped_wall = run_suite(sdk, src, venv, runs / "wrapped", wrapped=True, **go)
        result = SuiteResult(sdk, version, raw, wrapped, {"raw": raw_wall, "wrapped": wrapped_wall})
        selected = sorted(raw)

    first = differing(result.raw, result.wrapped, selected)
    if first and not args.no_rerun:
        ids = sorted(first)
        # whole files, so each test sees the module-level state it saw in the first run
        files = sorted({i.split("::")[0] for i in ids})
        again_raw, result.wall["rerun_raw"] = run_suite(
            sdk, src, venv, runs / "rerun-raw", wrapped=False, node_ids=files, **go
        )
        again_wrapped, result.wall["rerun_wrapped"] = run_suite(
            sdk, src, venv, runs / "rerun-wrapped", wrapped=True, node_ids=files, **go
        )
        for node_id in ids:
            raw_ok = again_raw.get(node_id, {}).get("outcome") in PASSING
            wrapped_ok = again_wrapped.get(node_id, {}).get("outcome") in PASSING
            if not raw_ok:
                result.flaky[node_id] = "raw failed on rerun"
            elif wrapped_ok:
                result.flaky[node_id] = "wrapped passed on rerun"
            else:
                result.differences[node_id] = first[node_id]
    else:
        result.differences = first
    compare(result, expected, selected)
    return result


def last_summary(cache: Path) -> dict[str, dict[str, dict[str, str]]]:
    path = cache / "summary.json"
    return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def summarize(result: SuiteResult) -> dict[str, object]:
    raw = Counter(r["outcome"] for r in result.raw.values())
    wrapped = Counter(r["outcome"] for r in result.wrapped.values())
    return {
        "version": result.version,
        "raw": dict(sorted(raw.items())),
        "wrapped": dict(sorted(wrapped.items())),
        "wall_seconds": {k: round(v, 1) for k, v in result.wall.items()},
        "differences": {
            i: {
                "wrapped": o,
                "reason": result.listed.get(i),
                "message": result.wrapped.get(i, {}).get("message", ""),
            }
            for i, o in sorted(result.differences.items())
        },
        "unlisted": result.unlisted,
        "stale": result.stale,
        "flaky": result.flaky,
    }


def toml_key(node_id: str) -> str:
    return json.dumps(node_id)  # a JSON string is a valid TOML basic string for these ids


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sdk", action="append", choices=SDKS, help="default: both")
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(os.environ.get("SDK_SUITES_CACHE", REPO / ".sdk-suites"))
    )
    parser.add_argument("--expected", type=Path, default=EXPECTED)
    parser.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0 or 1: in process)")
    parser.add_argument("--timeout", type=int, default=300, help="per-test timeout, seconds")
    parser.add_argument(
        "--only-differences",
        action="store_true",
        help="rerun wrapped only the files of the listed and last-differing tests, against the last raw run",
    )
    parser.add_argument("--no-rerun", action="store_true", help="do not rerun differences to weed out flakes")
    args = parser.parse_args(argv)
    args.cache_dir = args.cache_dir.resolve()
    args.cache_dir.mkdir(parents=True, exist_ok=True)

    expected = load_expected(args.expected)
    summary: dict[str, object] = {}
    failed = False
    lines: list[str] = []
    wrapped_total = unlisted_total = 0
    for sdk in args.sdk or SDKS:
        result = run_sdk(sdk, args, expected.get(sdk, {}))
        summary[sdk] = summarize(result)
        raw_pass = sum(r["outcome"] in PASSING for r in result.raw.values())
        wrapped_pass = sum(r["outcome"] in PASSING for r in result.wrapped.values())
        scope = "selected " if args.only_differences else ""
        wrapped_total += wrapped_pass
        unlisted_total += len(result.unlisted)
        lines.append(
            f"{sdk} {result.version}: raw {raw_pass} passed, wrapped {scope}{wrapped_pass} passed, "
            f"{len(result.differences)} differences "
            f"({len(result.listed)} listed, {len(result.unlisted)} unlisted), "
            f"{len(result.flaky)} flaky, {len(result.stale)} stale expectations"
        )
        for key in result.stale:
            print(f"WARNING {sdk}: stale, remove from expectations: {toml_key(key)}")
        for node_id, side in sorted(result.flaky.items()):
            print(f"WARNING {sdk}: flaky, not counted ({side}): {node_id}")
        if result.unlisted:
            failed = True
            print(
                f"\nFAIL {sdk}: {len(result.unlisted)} tests pass raw and fail wrapped, "
                f"not in {args.expected.name}:"
            )
            for node_id in result.unlisted:
                text = result.wrapped.get(node_id, {}).get("message", "").strip().splitlines()
                message = [line for line in text if line.startswith("E ")][:1] or text[-1:]
                print(f"  [{result.differences[node_id]}] {node_id}\n      {message[-1] if message else ''}")
            print(f"  (fix budgetclient, or list each under [{sdk}] in {args.expected} with its reason)")
    path = args.cache_dir / "summary.json"
    # merged into the last summary: an SDK run alone keeps the other SDK's entry
    path.write_text(json.dumps({**last_summary(args.cache_dir), **summary}, indent=1), encoding="utf-8")
    print()
    for line in lines:
        print(line)
    print(f"summary: {path}")
    # the plain closing line: wrapped tests passed, and differences that fail the run
    print(f"sdk-suites: {wrapped_total} passed, {unlisted_total} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
