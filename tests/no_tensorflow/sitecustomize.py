"""Put this folder first on PYTHONPATH to run Python as if TensorFlow were not installed.

Installed packages stay where they are, but the finder of every site-packages folder no longer
sees `tensorflow`: `import tensorflow` raises ModuleNotFoundError and
`importlib.util.find_spec("tensorflow")` returns None, as on a machine without it (the GPU
image keras-vit's JAX and PyTorch users run on). Setting `sys.modules["tensorflow"] = None`
would not do: Keras and PyTorch test `"tensorflow" in sys.modules`.
"""

import sys
from importlib import machinery
from importlib._bootstrap_external import _get_supported_file_loaders

HIDDEN = ("tensorflow", "tf_keras")


class _FinderWithoutTensorFlow(machinery.FileFinder):
    def find_spec(self, fullname, target=None):
        if fullname.partition(".")[0] in HIDDEN:
            return None
        return super().find_spec(fullname, target)


for _entry in list(sys.path):
    if _entry.endswith(("site-packages", "dist-packages")):
        sys.path_importer_cache[_entry] = _FinderWithoutTensorFlow(
            _entry, *_get_supported_file_loaders())
