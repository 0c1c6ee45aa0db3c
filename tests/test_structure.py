"""The package's dependencies run one way (`LAYERS`, from the bottom): kernels, then layers,
then the resampling math (`keras_vit.resample`, `keras_vit.patch_resize`: NumPy only), then the
checkpoint readers (which know the layers, and the variants only as data,
`keras_vit.architectures`), then the weight loaders and registry (`keras_vit.weights`, which
use the readers, never the reverse), then the model (whose `ViT(weights=...)` plans with the
loader), then the variants and everything built on the model, then the programs
(`applications`); and no module imports itself back through others, counting imports inside
functions (the ones a reader of the module's head does not see). Read from the source with
`ast`; run on main before issue 22 it finds the three cycles that issue names."""

import ast
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PACKAGES = ("keras_vit", "applications", "tf_data")


def _module_name(path):
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules():
    """{module name: path} of every project module."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            found[_module_name(path)] = path
    return found


def _is_type_checking(node):
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree):
    """Every import statement in `tree`, at any depth, except `if TYPE_CHECKING:` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, ast.If) and _is_type_checking(node):
            stack.extend(node.orelse)
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        stack.extend(ast.iter_child_nodes(node))


def _resolve(name, known):
    """The project module that importing `name` means (its longest known prefix), or None."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def import_graph():
    """{module: set of project modules it imports}. `from package import name` counts as an
    import of the submodule `package.name` where there is one, else of `package`; the
    implicit import of parent packages is not counted (every module would depend on the
    package's `__init__`)."""
    known = modules()
    graph = {}
    for name, path in known.items():
        edges = set()
        is_package = path.name == "__init__.py"
        for node in _imports(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = name.split(".") if is_package else name.split(".")[:-1]
                    anchor = anchor[:len(anchor) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                           for alias in node.names]
            for target in targets:
                resolved = _resolve(target, known)
                if resolved is not None and resolved != name:
                    edges.add(resolved)
        graph[name] = edges
    return graph


def cycles(graph):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


# Layers from the bottom: a module may import only modules of its own layer or below.
LAYERS = (
    ("kernels", ("keras_vit.kernels",)),
    ("layers", ("keras_vit.layers",)),
    # A layer built on TransformerBlock, outside keras_vit/layers for its backend-specific
    # replay of the dropout seeds in the recomputation.
    ("rematerialised block", ("keras_vit.remat",)),
    ("resampling", ("keras_vit.resample", "keras_vit.patch_resize")),
    ("checkpoint readers", ("keras_vit.architectures", "keras_vit.checkpoint",
                            "keras_vit.formats")),
    ("weights", ("keras_vit.weights",)),
    ("model", ("keras_vit.model",)),
    ("variants and the rest of the library", ("keras_vit",)),
    ("data pipelines", ("tf_data",)),
    ("programs", ("applications",)),
)


def layer_of(module):
    """The index in `LAYERS` of the most specific prefix that `module` falls under."""
    best, best_length = None, -1
    for rank, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = rank, len(prefix)
    return best


def test_the_graph_is_read():
    graph = import_graph()
    assert "keras_vit.kernels" in graph["keras_vit.layers.attention"]
    assert "keras_vit.kernels.reference" in graph["keras_vit.kernels.torch"]
    # Function-level imports count: model.py imports the weight planner inside `ViT`.
    assert "keras_vit.weights.loading" in graph["keras_vit.model"]


def test_no_import_cycles():
    assert cycles(import_graph()) == []


def test_cycle_detection_sees_function_level_imports(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_dependencies_run_one_way():
    graph = import_graph()
    upward = [
        f"{module} ({LAYERS[layer_of(module)][0]}) imports {target} "
        f"({LAYERS[layer_of(target)][0]})"
        for module, targets in sorted(graph.items()) for target in sorted(targets)
        if layer_of(module) is not None and layer_of(target) is not None
        and layer_of(target) > layer_of(module)
        and not module == "keras_vit"  # the package's __init__ re-exports the public API
    ]
    assert upward == []


def test_the_checkpoint_readers_do_not_lean_on_the_weights_package():
    """`keras_vit.weights` imports the checkpoint readers; they import nothing of it back, not
    even inside a function (the PI-resize math lives beside `resample`)."""
    graph = import_graph()
    readers = [m for m in graph if layer_of(m) == _layer("checkpoint readers")]
    assert "keras_vit.checkpoint" in readers and "keras_vit.formats.timm" in readers
    assert [(m, t) for m in readers for t in sorted(graph[m])
            if t == "keras_vit.weights" or t.startswith("keras_vit.weights.")] == []
    assert "keras_vit.patch_resize" in graph["keras_vit.checkpoint"]


def test_the_old_patch_resize_path_still_imports():
    from keras_vit.weights import patch_resize as old

    import keras_vit
    from keras_vit import patch_resize

    assert old.pi_resize_patch_embedding is patch_resize.pi_resize_patch_embedding
    assert keras_vit.pi_resize_patch_embedding is patch_resize.pi_resize_patch_embedding
    assert old.resize_matrix is patch_resize.resize_matrix
    assert old.PATCH_EMBED_RESAMPLE is patch_resize.PATCH_EMBED_RESAMPLE


def _layer(title):
    return [t for t, _ in LAYERS].index(title)


@pytest.mark.parametrize("folder", ["keras_vit/layers"])
def test_layers_test_no_backend_and_import_no_framework(folder):
    """The layers speak `keras.ops`: no `keras.backend.backend()` test, no import of
    TensorFlow, PyTorch or JAX (those live in keras_vit/kernels)."""
    offending = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if "backend()" in text:
            offending.append(f"{path.name}: backend()")
        for node in _imports(ast.parse(text)):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            offending += [f"{path.name}: imports {n}" for n in names
                          if n.split(".")[0] in ("tensorflow", "torch", "jax", "jaxlib")]
    assert offending == []
