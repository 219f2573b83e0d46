"""The Python face of a bridge session: bundle in, specs out, run over caller buffers."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import _core
from ._core import TensorError, TensorSpec


def available_runtimes() -> tuple[str, ...]:
    """Runtimes compiled into this build: always ``"loopback"``, plus ``"flexmlrt"`` with the SDK."""
    return ("loopback", "flexmlrt") if _core.flexmlrt_available() else ("loopback",)


def _is_torch_tensor(x: Any) -> bool:
    return type(x).__module__.startswith("torch") and hasattr(x, "numpy") and hasattr(x, "device")


def _as_buffer(x: Any, role: str, name: str) -> Any:
    """A buffer-protocol view of ``x`` that shares its memory (never a copy).

    numpy arrays and other buffer-protocol objects pass through. A torch CPU
    tensor becomes ``tensor.detach().numpy()``, a view of the same storage.
    """
    if isinstance(x, np.ndarray) or not _is_torch_tensor(x):
        return x
    if x.device.type != "cpu":
        raise TensorError(
            f"{role} {name!r} is a torch tensor on {x.device}; the bridge takes CPU tensors "
            "(call .cpu())"
        )
    try:
        return x.detach().numpy()
    except (TypeError, RuntimeError) as e:
        raise TensorError(
            f"{role} {name!r} is a torch {x.dtype} tensor that numpy cannot view: {e}"
        ) from e


def _buffers(given: Any, role: str) -> Any:
    if isinstance(given, Mapping):
        return {k: _as_buffer(v, role, str(k)) for k, v in given.items()}
    return _as_buffer(given, role, "(single)")


class Session:
    """One model loaded from a bundle, ready to run.

    ``path`` is memory-mapped (private, copy-on-write) and handed to the
    runtime as one buffer; nothing of it is copied into Python.

    ``runtime``: ``"auto"`` picks ``"loopback"`` for a loopback bundle and
    ``"flexmlrt"`` for anything else (a compiled ``.rai``); ``"flexmlrt"`` in a
    build without the SDK raises :class:`RuntimeUnavailableError`.
    ``device``, ``subgraph``, ``cache_dir`` and ``execute_mode`` are FlexMLRT
    options (``cache_dir`` defaults to the bundle's directory).

    Threading: :meth:`run` releases the GIL while the runtime works, and holds
    a per-session mutex, so one session runs one call at a time and distinct
    sessions run in parallel. The arrays :meth:`run` returns are views of the
    session's own output buffers, reused (overwritten) by the next run: copy
    what you keep, or pass your own ``outputs=``. Sharing one session between
    threads is safe for the session, but only with per-thread ``outputs=`` are
    the results safe too; otherwise use one session per thread.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        runtime: str = "auto",
        device: str = "stx",
        subgraph: str = "vaiml_par_0",
        cache_dir: str | os.PathLike[str] | None = None,
        execute_mode: int = 2,
    ) -> None:
        self._core = _core.Session(
            os.fspath(path),
            runtime,
            device,
            subgraph,
            os.fspath(cache_dir) if cache_dir is not None else "",
            execute_mode,
        )

    @property
    def inputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._core.inputs)

    @property
    def outputs(self) -> tuple[TensorSpec, ...]:
        return tuple(self._core.outputs)

    @property
    def runtime(self) -> str:
        return self._core.runtime

    @property
    def path(self) -> str:
        return self._core.path

    @property
    def bundle_nbytes(self) -> int:
        return self._core.bundle_nbytes

    @property
    def run_count(self) -> int:
        return self._core.run_count

    @property
    def closed(self) -> bool:
        return self._core.closed

    def run(self, inputs: Any, outputs: Any = None) -> dict[str, Any]:
        """Run once; returns ``{output name: array}``.

        ``inputs``: ``{name: array}``, or a single array when the model has one
        input. Arrays are numpy arrays, torch CPU tensors or any buffer-protocol
        object, C-contiguous, with exactly the spec's dtype and shape; the
        runtime reads them in place (zero copy). Anything else raises
        :class:`TensorError`.

        ``outputs``: ``None`` (results land in the session's preallocated
        buffers, returned as numpy views) or ``{name: array}`` / one array of
        your own, written in place and returned as given.
        """
        result = self._core.run(
            _buffers(inputs, "input"), None if outputs is None else _buffers(outputs, "output")
        )
        if outputs is None:
            return result
        if isinstance(outputs, Mapping):
            return dict(outputs)
        return {self._core.outputs[0].name: outputs}

    def close(self) -> None:
        """Release the runtime and the bundle mapping now; later runs raise BridgeError."""
        self._core.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def last_io_addresses(self) -> dict[str, dict[str, int]]:
        """Addresses handed to the runtime by the last run: ``{"inputs": {...}, "outputs": {...}}``."""
        return self._core.last_io_addresses()

    def last_run_window_ns(self) -> tuple[int, int]:
        """``(start, end)`` of the last runtime call, ``time.monotonic_ns``-like steady clock."""
        return self._core.last_run_window_ns()

    def __repr__(self) -> str:
        return f"Session({self.path!r}, runtime={self.runtime!r})"
