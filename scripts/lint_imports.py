"""``make test``'s first step: import-linter's contracts (pyproject.toml, [tool.importlinter]) on attnforge.

import-linter finds a package's modules by walking the folder of its root
package, but attnforge's subpackages live in top-level folders (hw/, sim/, algo/,
tb/, fpga/, mapped by setuptools' package-dir). So this script lays out the
package as installed — a temporary ``attnforge/`` of symbolic links, built from
the package-dir table — and runs ``lint-imports`` on it. Exit status: lint-imports'.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    config = ROOT / "pyproject.toml"
    package_dir = tomllib.loads(config.read_text())["tool"]["setuptools"]["package-dir"]
    with tempfile.TemporaryDirectory(prefix="attnforge-layers-") as tmp:
        package = Path(tmp) / "attnforge"
        package.mkdir()
        for entry in (ROOT / package_dir["attnforge"]).iterdir():
            if entry.name != "__pycache__":
                (package / entry.name).symlink_to(entry)
        for name, folder in package_dir.items():
            if name != "attnforge":
                package.joinpath(*name.split(".")[1:]).symlink_to(ROOT / folder)
        sys.path.insert(0, tmp)
        os.chdir(tmp)   # lint-imports puts the working directory first on sys.path
        from importlinter.cli import lint_imports

        return lint_imports(config_filename=str(config), no_cache=True)


if __name__ == "__main__":
    sys.exit(main())
