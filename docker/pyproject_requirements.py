"""Print the project's runtime requirements (dependencies + chosen extras) from pyproject.toml.

Used by docker/Dockerfile so the third-party dependencies are installed in their own cached layer,
before the project's source is copied: editing a .py file then does not re-download them.

    python docker/pyproject_requirements.py pyproject.toml serve,train > requirements.txt

Standard library only (tomllib, Python >= 3.11).
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The project's dependencies plus those of `extras`, in order, without duplicates.

    A self-reference such as `elmrec[serve]` inside an extra is expanded, not emitted.
    """
    project = tomllib.loads(pyproject.read_text())["project"]
    own = _canonical(project["name"])
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown = [e for e in extras if e not in optional]
    if unknown:
        raise SystemExit(f"unknown extra(s) {', '.join(unknown)}; pyproject.toml has {', '.join(optional)}")

    out: list[str] = []
    seen_extras: set[str] = set()

    def add(reqs: list[str]) -> None:
        for req in reqs:
            m = _NAME.match(req)
            if m and _canonical(m.group(1)) == own:
                inner = re.search(r"\[([^\]]*)\]", req)
                for extra in (inner.group(1).split(",") if inner else []):
                    expand(extra.strip())
                continue
            if req not in out:
                out.append(req)

    def expand(extra: str) -> None:
        if extra and extra not in seen_extras:
            seen_extras.add(extra)
            add(optional.get(extra, []))

    add(list(project.get("dependencies", [])))
    for extra in extras:
        expand(extra)
    return out


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print("usage: pyproject_requirements.py PYPROJECT [EXTRA,EXTRA...]", file=sys.stderr)
        return 2
    extras = [e.strip() for e in argv[2].split(",") if e.strip()] if len(argv) == 3 else []
    print("\n".join(requirements(Path(argv[1]), extras)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
