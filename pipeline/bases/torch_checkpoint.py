"""Read a legacy (pre-1.6, non-zip) PyTorch checkpoint into numpy arrays, without torch.

A legacy ``torch.save`` file is five pickles followed by raw storage data::

    magic number | protocol version | sys info | object | [storage keys]
    then, for each storage key in order: <int64 little-endian element count> <raw elements>

The object pickle (a state dict) refers to storages through persistent ids
``('storage', <StorageType>, key, location, numel[, view_metadata])`` and rebuilds tensors
with ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)``.

Unpickling runs whatever callables a file names, so a plain ``pickle.load`` of a downloaded
checkpoint can execute arbitrary code. :class:`_StateDictUnpickler` admits only the handful of
globals a state dict needs, each mapped to an inert stand-in defined here; anything else
(``os.system``, ``builtins.eval`` ...) is refused before it is called.
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from pipeline.errors import PipelineError

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001

# torch storage type name -> numpy dtype of its elements (always little endian on disk here:
# we refuse files whose sys info says otherwise).
_STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for a ``torch.<X>Storage`` class: only its element type matters."""

    name: str
    dtype: np.dtype


@dataclass
class _Storage:
    """A storage announced by the pickle; its data arrive after the pickles."""

    key: str
    dtype: np.dtype
    numel: int
    data: np.ndarray | None = None


@dataclass(frozen=True)
class _StorageView:
    """A legacy storage view: ``numel`` elements of ``root`` from ``offset`` on."""

    root: _Storage
    offset: int
    numel: int


@dataclass(frozen=True)
class _TensorRef:
    """Stand-in for a tensor: where its elements lie, materialised once storages are read."""

    storage: _Storage | _StorageView
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage: Any, storage_offset: Any, size: Any, stride: Any,
                       requires_grad: Any = False, backward_hooks: Any = None,
                       metadata: Any = None) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor_v2``: records the layout, checks types."""
    if not isinstance(storage, _Storage | _StorageView):
        raise pickle.UnpicklingError("tensor without a storage")
    ints = (storage_offset, *size, *stride)
    if not all(isinstance(v, int) and v >= 0 for v in ints) or len(size) != len(stride):
        raise pickle.UnpicklingError("malformed tensor layout")
    return _TensorRef(storage, storage_offset, tuple(size), tuple(stride))


class _StateDictUnpickler(pickle.Unpickler):
    """An unpickler that knows only what a state dict of tensors is made of."""

    def __init__(self, file: BinaryIO, storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self.storages = storages  # shared by the pickles of one file

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _STORAGE_DTYPES:
            return _StorageType(name, _STORAGE_DTYPES[name])
        raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")

    def persistent_load(self, pid: Any) -> _Storage | _StorageView:
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")
        _, storage_type, key, _location, numel, *view = pid
        if not (isinstance(storage_type, _StorageType) and isinstance(key, str)
                and isinstance(numel, int) and numel >= 0):
            raise pickle.UnpicklingError("malformed storage reference")
        storage = self.storages.get(key)
        if storage is None:
            storage = self.storages[key] = _Storage(key, storage_type.dtype, numel)
        elif storage.dtype != storage_type.dtype:
            raise pickle.UnpicklingError(f"storage {key} used with two element types")
        view_metadata = view[0] if view else None
        if view_metadata is None:
            return storage
        # Legacy views: (view_key, offset, view_size) into the root storage.
        _view_key, offset, view_numel = view_metadata
        if not (isinstance(offset, int) and isinstance(view_numel, int)
                and offset >= 0 and offset + view_numel <= numel):
            raise pickle.UnpicklingError("malformed storage view")
        return _StorageView(storage, offset, view_numel)


def _read_storage(f: BinaryIO, storage: _Storage) -> None:
    header = f.read(8)
    if len(header) != 8:
        raise PipelineError("truncated")
    (count,) = struct.unpack("<q", header)
    if count != storage.numel:
        raise PipelineError(f"storage {storage.key} holds {count} elements, "
                            f"the pickle announced {storage.numel}")
    nbytes = count * storage.dtype.itemsize
    raw = f.read(nbytes)
    if len(raw) != nbytes:
        raise PipelineError("truncated")
    storage.data = np.frombuffer(raw, dtype=storage.dtype)


def _materialise(ref: _TensorRef) -> np.ndarray:
    storage, base = ref.storage, 0
    if isinstance(storage, _StorageView):
        storage, base, limit = storage.root, storage.offset, storage.numel
    else:
        limit = storage.numel
    assert storage.data is not None
    span = sum((n - 1) * s for n, s in zip(ref.size, ref.stride, strict=True))
    if any(n == 0 for n in ref.size):
        return np.zeros(ref.size, dtype=storage.dtype)
    if ref.offset + span >= limit:
        raise PipelineError("a tensor reaches past the end of its storage")
    flat = storage.data[base + ref.offset:]
    item = storage.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(flat, shape=ref.size,
                                           strides=tuple(s * item for s in ref.stride))
    # Copy: native byte order, contiguous, and independent of the file buffer.
    return np.array(view, dtype=storage.dtype.newbyteorder("="), order="C")


def _load(f: BinaryIO) -> dict[str, np.ndarray]:
    storages: dict[str, _Storage] = {}

    def next_pickle() -> Any:
        # One unpickler per pickle (as torch.save wrote them), all restricted.
        return _StateDictUnpickler(f, storages).load()

    if next_pickle() != MAGIC_NUMBER:
        raise PipelineError("not a legacy PyTorch checkpoint (bad magic number)")
    if next_pickle() != PROTOCOL_VERSION:
        raise PipelineError("unsupported PyTorch checkpoint protocol version")
    sys_info = next_pickle()
    if not isinstance(sys_info, dict) or sys_info.get("little_endian") is not True:
        raise PipelineError("only little-endian PyTorch checkpoints are supported")
    state = next_pickle()
    keys = next_pickle()
    if not isinstance(state, dict) or not all(
            isinstance(k, str) and isinstance(v, _TensorRef) for k, v in state.items()):
        raise PipelineError("the checkpoint is not a state dict of tensors")
    if not isinstance(keys, list) or sorted(keys) != sorted(storages):
        raise PipelineError("the checkpoint's storage list does not match its tensors")
    for key in keys:
        _read_storage(f, storages[key])
    return {name: _materialise(ref) for name, ref in state.items()}


def load_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The tensors of a legacy PyTorch state-dict checkpoint, by name, as numpy arrays.

    Raises :class:`PipelineError` (one line) for a file that is not such a checkpoint, or is
    truncated, or names any global a state dict does not need.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise PipelineError(f"cannot read PyTorch checkpoint {path}: {e.strerror}") from None
    if data[:2] == b"PK":
        raise PipelineError(f"{path.name} is a zip-format PyTorch checkpoint (torch >= 1.6); "
                            "only the legacy format is supported")
    try:
        return _load(io.BytesIO(data))
    except PipelineError as e:
        raise PipelineError(f"{path.name}: {e}") from None
    except Exception as e:  # anything the untrusted pickle stream provokes
        detail = str(e).splitlines()[0] if str(e) else ""
        what = "truncated" if isinstance(e, EOFError) else type(e).__name__
        raise PipelineError(f"{path.name} is not a readable PyTorch checkpoint "
                            f"({what}{': ' + detail if detail else ''})") from None
