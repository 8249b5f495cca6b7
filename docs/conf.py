"""Sphinx configuration for the ratekeeper documentation.

The build must not need the network: no intersphinx, no remote images.
"""

import runpy
from importlib.metadata import version as _version
from pathlib import Path

from sphinx.application import Sphinx

project = "ratekeeper"
author = "The ratekeeper authors"
copyright = "the ratekeeper authors"
release = _version("ratekeeper")
version = ".".join(release.split(".")[:2])

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.napoleon",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
# _results holds the benchmarks' reports, included by performance.md.
exclude_patterns = ["_build", "_results"]

myst_enable_extensions = ["colon_fence", "deflist"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"

# Docstring examples are written against the public namespace; the doctest builder runs
# them (and the pages' own examples) with these names already imported.
doctest_global_setup = """
import ratekeeper
from ratekeeper import (
    AsyncLimiter,
    CallableSource,
    ChainSource,
    ConfigError,
    Decision,
    DictSource,
    EnvSource,
    FileSource,
    Limiter,
    MemoryStorage,
    Policy,
    Rate,
    RatekeeperError,
    RateLimitExceeded,
    Snapshot,
    StorageError,
    limit,
)
from ratekeeper.sources import Problem, check_file, load_file
from ratekeeper.testing import ManualClock
"""

html_theme = "furo"
html_title = f"ratekeeper {release}"


def _write_figures(app: Sphinx) -> None:
    """Draw the algorithm figures from the current code before any page is read."""
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "figures.py"
    write_figures = runpy.run_path(str(script))["write_figures"]
    write_figures(Path(app.srcdir) / "_static" / "figures")


def setup(app: Sphinx) -> None:
    app.connect("builder-inited", _write_figures)
