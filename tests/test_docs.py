"""The API reference: `mkdocs build --strict` (what `make docs` runs) succeeds, and every public
name of `keras_vit`, `keras_vit.analysis` and `tf_data` is on it.

The reference pages are generated at build time from the code (tools/api_reference.py), so a
name added to a package must appear without editing the docs; this test reads the built
site's inventory (`objects.inv`, what mkdocstrings writes for every object it rendered) and
compares it with the names the modules have at run time. Strict mode turns every warning into
a failure: a link to a missing page or file, a `:::` block naming an object that does not
exist, a docstring mkdocstrings cannot parse.
"""

import importlib
import inspect
import os
import subprocess
import sys
import zlib

from conftest import once, require

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Each module on the reference, with the fewest public names it can have (a module whose names
# went missing, e.g. an `__all__` emptied by mistake, fails).
MODULES = {"keras_vit": 10, "keras_vit.analysis": 10, "tf_data": 10, "keras_vit.evaluation": 3,
           "keras_vit.optimizers": 2, "keras_vit.resolution": 5}


def public_names(module):
    """`__all__` where the module has one, else every name it binds that does not start with
    `_` and is not a module (the submodules a package imports for itself)."""
    if hasattr(module, "__all__"):
        return list(module.__all__)
    return [name for name, value in vars(module).items()
            if not name.startswith("_") and not inspect.ismodule(value)]


def inventory(site):
    """The object names in a Sphinx-format `objects.inv` (mkdocstrings writes one)."""
    with open(os.path.join(site, "objects.inv"), "rb") as f:
        data = f.read()
    header_end = 0
    for _ in range(4):  # four plain-text header lines, then zlib
        header_end = data.index(b"\n", header_end) + 1
    lines = zlib.decompress(data[header_end:]).decode().splitlines()
    return {line.split(" ", 1)[0] for line in lines if line}


@once  # the docs do not depend on the backend
def test_the_api_reference_builds_strictly_and_lists_every_public_name(tmp_path):
    require("mkdocs")
    require("mkdocstrings_handlers.python")
    site = tmp_path / "site"
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--quiet",
                           "--config-file", os.path.join(ROOT, "mkdocs.yml"),
                           "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rendered = inventory(site)
    missing = []
    for module_name, fewest in MODULES.items():
        module = importlib.import_module(module_name)
        names = public_names(module)
        assert len(names) >= fewest, (module_name, names)
        for name in names:
            value = getattr(module, name)
            # An object may be listed under its own home (a function whose module shares its
            # name: tf_data.subset is tf_data/subset.py's subset).
            home = f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', '')}"
            if f"{module_name}.{name}" not in rendered and home not in rendered:
                missing.append(f"{module_name}.{name}")
    assert missing == []
    # The pages a newcomer follows from the README are there.
    for page in ("index.html", "api/index.html", "guide/index.html", "testing/index.html"):
        assert (site / page).is_file(), page
