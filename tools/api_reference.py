"""MkDocs hook: the API reference pages, generated from the code at every build.

`docs/api.md` holds one marker per module, `<!-- api: keras_vit -->`; this hook replaces each
with a `::: module.name` block (rendered by mkdocstrings from the docstrings) for every public
name the module has, so that a name added to `keras_vit/__init__.py` (or to `tf_data`'s
`__all__`) is on the reference without editing the docs. The names are read statically, with
griffe (what mkdocstrings reads too): the modules are not imported, so the build needs neither
TensorFlow nor a Keras backend. `tests/test_docs.py` checks the built reference against the
names the modules have at run time.

It also makes the site's home page from README.md, and turns links from the docs to repository
files outside `docs/` (benchmarks/RESULTS.md, tests, examples) into plain text on the site: they
work on the repository's own pages, not on the site. A link to a file that does not exist is
left alone, so the strict build fails on it.
"""

import os
import re

import griffe
from mkdocs.structure.files import File

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARKER = re.compile(r"<!-- api: ([\w.]+) -->")
LINK = re.compile(r"\[([^\]]+)\]\(([^)#\s]+)(#[^)\s]*)?\)")


def public_names(module_path):
    """The public names of a module, as `tests/test_docs.py` reads them at run time: its
    `__all__` if it has one, else every name it binds that does not start with `_` and is not
    a module."""
    package = griffe.load(module_path.partition(".")[0], search_paths=[ROOT],
                          resolve_aliases=False)
    module = package[module_path.partition(".")[2]] if "." in module_path else package
    if module.exports is not None:
        return [str(name) for name in module.exports]
    names = []
    for name, member in module.members.items():
        if name.startswith("_"):
            continue
        if member.is_alias:
            target = member.target_path
            if target.partition(".")[0] != module_path.partition(".")[0]:
                continue  # imported from another library
            try:
                if member.is_module:
                    continue
            except griffe.AliasResolutionError:
                continue
        elif member.is_module:
            continue
        names.append(name)
    return names


def _object_path(module, module_path, name):
    """What `module.name` is at run time. griffe prefers a submodule to a same-named object the
    package imports from it (`tf_data.subset`, the function of `tf_data/subset.py`); Python
    binds the object."""
    member = module.members.get(name)
    try:
        if member is not None and member.is_module and name in member.members:
            return f"{module_path}.{name}.{name}"
    except griffe.AliasResolutionError:
        pass
    return f"{module_path}.{name}"


def _reference(module_path):
    package = griffe.load(module_path.partition(".")[0], search_paths=[ROOT],
                          resolve_aliases=False)
    module = package[module_path.partition(".")[2]] if "." in module_path else package
    return "\n".join(f"::: {_object_path(module, module_path, name)}\n"
                      for name in public_names(module_path))


def on_files(files, config):
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    # README's links are relative to the repository root; the site's pages to docs/.
    readme = readme.replace("](docs/", "](")
    readme = LINK.sub(lambda m: m.group(0) if not m.group(2).startswith(("benchmarks/", "examples/"))
                      else m.group(0).replace("](", "](../", 1), readme)
    files.append(File.generated(config, "index.md", content=readme))
    return files


def on_page_markdown(markdown, page, config, files):
    markdown = MARKER.sub(lambda m: _reference(m.group(1)), markdown)
    here = os.path.dirname(os.path.join(config["docs_dir"], page.file.src_uri))

    def outside(match):
        text, target, anchor = match.group(1), match.group(2), match.group(3) or ""
        if "://" in target or target.startswith("mailto:"):
            return match.group(0)
        path = os.path.normpath(os.path.join(here, target))
        inside = path.startswith(os.path.abspath(config["docs_dir"]) + os.sep)
        if inside or not os.path.exists(path):
            return match.group(0)
        return text  # a repository file the site does not hold
    return LINK.sub(outside, markdown)
