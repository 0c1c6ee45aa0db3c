"""Downloading registry checkpoints into the Keras cache, verified.

Files go through `keras.utils.get_file` into `<cache_dir or $KERAS_HOME or ~/.keras>/keras_vit/`.
With a SHA-256 (`WeightsEntry.sha256` or the `sha256=` argument) the file must match it; with
none (no hash is published for the ViT files) a fresh download must at least be a complete
`.npz` (every zip member's CRC is checked) or a complete `.safetensors` file (its header's
tensors end where the file does). A file that fails either check is deleted from the
cache before the error is raised, so the next call downloads it again instead of trusting it.
A download interrupted mid-way is removed by `get_file` itself. (`get_file` has no resume: an
interrupted download starts over.)
"""

import hashlib
import os
import zipfile

import keras

CACHE_SUBDIR = "keras_vit"


class WeightsDownloadError(OSError):
    """The file could not be fetched (network, missing URL, truncated transfer)."""


class WeightsIntegrityError(ValueError):
    """The file was fetched but is not the expected one (hash mismatch, corrupt archive)."""


def sha256_of(path, chunk=2**20):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def check_npz_archive(path):
    """Raises WeightsIntegrityError unless `path` is a complete zip archive (CRCs checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as error:
        raise WeightsIntegrityError(f"{path} is not a complete .npz archive ({error}).") from None
    if bad is not None:
        raise WeightsIntegrityError(f"{path} is corrupt: member {bad!r} fails its CRC check.")


def check_safetensors_file(path):
    """Raises WeightsIntegrityError unless `path` is a complete `.safetensors` file: a
    readable header whose tensors end exactly where the file does (a truncated or padded
    download fails)."""
    import json  # noqa: PLC0415
    import struct  # noqa: PLC0415

    size = os.path.getsize(path)
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > size - 8:
                raise ValueError(f"header length {length} exceeds the file")
            header = json.loads(f.read(length))
        header.pop("__metadata__", None)
        end = max((info["data_offsets"][1] for info in header.values()), default=0)
    except (ValueError, KeyError, TypeError, struct.error) as error:
        raise WeightsIntegrityError(f"{path} is not a complete .safetensors file ({error}).") from None
    if 8 + length + end != size:
        raise WeightsIntegrityError(
            f"{path} is not a complete .safetensors file: its tensors end at byte "
            f"{8 + length + end}, the file has {size}.")


def integrity_check(filename):
    """The completeness check for a downloaded file of this name (no hash published)."""
    return check_safetensors_file if filename.endswith(".safetensors") else check_npz_archive


def cache_root(cache_dir=None):
    """The cache root: `cache_dir`, else `$KERAS_HOME`, else `~/.keras` (`/tmp/.keras` where the
    home folder is not writable): where `keras.utils.get_file` caches, read at each call so
    that a `KERAS_HOME` set after `import keras` applies too. Keras has no public accessor."""
    if cache_dir:
        return os.path.expanduser(cache_dir)
    if os.environ.get("KERAS_HOME"):
        return os.path.expanduser(os.environ["KERAS_HOME"])
    home = os.path.expanduser("~")
    return os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")


def _cache_path(fname, cache_dir):
    return os.path.join(cache_root(cache_dir), CACHE_SUBDIR, fname)


def _remove(path):
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def fetch(url, fname, sha256=None, cache_dir=None, force_download=False, check=check_npz_archive):
    """Downloads `url` to the cache as `fname` (unless cached and valid); returns its path.

    Args:
        url: the origin (http(s):// or file://).
        fname: the name in the cache directory.
        sha256: expected SHA-256 hex digest, or None.
        cache_dir: cache root (default: `$KERAS_HOME` or `~/.keras`); files go in `keras_vit/`.
        force_download: download again even if cached.
        check: integrity check for fresh downloads when there is no hash (None to skip).

    Raises:
        WeightsDownloadError: the transfer failed; nothing is left in the cache.
        WeightsIntegrityError: wrong hash or corrupt file; it was deleted from the cache.
    """
    # Always an explicit root, made first: get_file silently falls back to /tmp/.keras when
    # the directory does not exist yet, and the checks below must look where it wrote.
    cache_dir = cache_root(cache_dir)
    os.makedirs(cache_dir, exist_ok=True)
    expected_path = _cache_path(fname, cache_dir)
    fresh = force_download or not os.path.exists(expected_path)
    sha256 = sha256.lower() if sha256 else None
    try:
        path = keras.utils.get_file(
            fname=fname,
            origin=url,
            file_hash=sha256,
            hash_algorithm="sha256",
            cache_subdir=CACHE_SUBDIR,
            cache_dir=cache_dir,
            force_download=force_download,
        )
    except ValueError as error:
        if sha256 is None or "hash" not in str(error):
            raise
        actual = sha256_of(expected_path) if os.path.exists(expected_path) else "unavailable"
        _remove(expected_path)
        raise WeightsIntegrityError(
            f"Downloaded {url} but its SHA-256 is {actual}, expected {sha256} (a truncated or "
            f"altered file). It was deleted from the cache ({expected_path}); calling again "
            "downloads it afresh."
        ) from None
    except Exception as error:  # get_file raises bare Exceptions for URL errors
        _remove(expected_path)
        raise WeightsDownloadError(
            f"Could not download {url}: {error}. Nothing was kept in the cache."
        ) from error
    if sha256 is None and check is not None and (fresh or path != expected_path):
        try:
            check(path)
        except WeightsIntegrityError as error:
            _remove(path)
            raise WeightsIntegrityError(
                f"Downloaded {url} but {error} It was deleted from the cache; calling again "
                "downloads it afresh."
            ) from None
    return path


def download_weights(variant, name="imagenet", cache_dir=None, force_download=False, sha256=None):
    """Downloads (or finds in the cache) the registry file `name` for `variant`; returns its path.

    Example (needs network):

    >>> path = download_weights("ViTB16", "imagenet21k")  # doctest: +SKIP
    """
    from keras_vit.weights.registry import get_weights_entry  # noqa: PLC0415

    entry = get_weights_entry(variant, name)
    return fetch(entry.url, entry.filename, sha256=sha256 or entry.sha256, cache_dir=cache_dir,
                 force_download=force_download, check=integrity_check(entry.filename))
