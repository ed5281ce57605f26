"""Start BlenderProc's Python API inside a plain Python that has the `bpy` wheel installed.

BlenderProc 2.8 expects to run inside Blender's own Python, launched by `blenderproc run`. Here
Blender is the `bpy` module of our venv, so its start-up is adapted (see ../shared/ENV.md), and
every such adaptation lives in this one module:

1. `import blenderproc` outside `blenderproc run` raises unless a marker variable is set; we set it
   for the duration of the import only.
2. The package's "inside Blender" branch pip-installs its requirements into Blender's Python
   (`SetupUtility.setup`): replaced by a no-op that only sets BlenderProc's temporary folder.
3. That branch removes site-packages from `sys.path` (where bpy and every dependency live): we
   restore `sys.path` exactly as it was.
4. A few optional packages that BlenderProc imports at module level for features we never use
   (GitPython for V-HACD, pypng for the BOP writer, scikit-learn for the face slicer, rich for its
   progress bar) may be absent from our pinned environment: placeholders stand in during the
   import and raise a clear ImportError if those features are ever called.
5. `bproc.init()` sets the UI language to en_US, which the bpy wheel lacks: we run the rest of its
   initialisation without that line.

Nothing happens at import time; `ensure_blenderproc()` does it once per process and returns the
`blenderproc` module.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import tempfile
import threading
import types
from typing import Any

_LOCK = threading.Lock()
_STATE: dict[str, Any] = {}

# Modules BlenderProc imports at module level only for features this pipeline does not use.
_OPTIONAL_MODULES = (
    "git",
    "png",
    "sklearn",
    "sklearn.cluster",
    "rich",
    "rich.console",
    "rich.progress",
)


class BlenderUnavailable(RuntimeError):
    """bpy or BlenderProc cannot be imported in this Python."""


class _MissingModule(types.ModuleType):
    """Placeholder for an absent optional package: attributes exist, using them raises."""

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        module = self.__name__

        def missing(*_args: Any, **_kwargs: Any) -> Any:
            raise ImportError(
                f"{module}.{attr} is not installed: this BlenderProc feature is not used by the "
                "pipeline (see data_pipeline/render/blenderproc_env.py)"
            )

        return missing


def _absent(top_level: str) -> bool:
    if top_level in sys.modules:
        return isinstance(sys.modules[top_level], _MissingModule)
    try:
        return importlib.util.find_spec(top_level) is None
    except (ImportError, ValueError):
        return True


def ensure_blenderproc() -> types.ModuleType:
    """Import and initialise BlenderProc once per process; returns the `blenderproc` module."""
    with _LOCK:
        if "bproc" not in _STATE:
            _STATE["bproc"] = _start()
        return _STATE["bproc"]


def blender_version() -> str:
    ensure_blenderproc()
    import bpy

    return bpy.app.version_string


def blenderproc_version() -> str:
    return ensure_blenderproc().__version__


def _start() -> types.ModuleType:
    try:
        import bpy  # noqa: F401  (Blender itself; everything else is pointless without it)
    except ImportError as exc:
        raise BlenderUnavailable(
            "the `bpy` module (Blender as a Python module, bpy==4.2.x) is not importable in "
            f"{sys.executable}: install the project's pinned dependencies ({exc})"
        ) from exc
    if importlib.util.find_spec("blenderproc") is None:
        raise BlenderUnavailable(f"blenderproc is not installed in {sys.executable}")

    saved_path = list(sys.path)
    saved_pythonpath = os.environ.get("PYTHONPATH")
    stubs = [name for name in _OPTIONAL_MODULES if _absent(name.split(".")[0])]
    for name in stubs:
        sys.modules[name] = _MissingModule(name)
    markers = (
        "OUTSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT_BUT_IN_RUN_SCRIPT",
        "INSIDE_OF_THE_INTERNAL_BLENDER_PYTHON_ENVIRONMENT",
    )
    try:
        # (1) The bare package, which refuses plain `python` unless the run-script marker is set.
        os.environ[markers[0]] = "1"
        import blenderproc
        from blenderproc.python.utility.SetupUtility import SetupUtility

        # (2) No pip installs into "Blender's Python"; just BlenderProc's temporary folder.
        temp_dir = tempfile.mkdtemp(prefix="blenderproc-")

        def setup(*_args: Any, **_kwargs: Any) -> list[str]:
            SetupUtility.setup_utility_paths(temp_dir)
            return sys.argv

        SetupUtility.setup = staticmethod(setup)
        # (3) Re-run the package body in its "inside Blender" branch, which imports the API. It
        # removes the first sys.path entry equal to site-packages: a duplicate at the end absorbs
        # that, and the saved path is restored below either way.
        os.environ[markers[1]] = "1"
        sys.path.append(os.path.dirname(os.path.dirname(blenderproc.__file__)))
        blenderproc = importlib.reload(blenderproc)
    finally:
        for marker in markers:
            os.environ.pop(marker, None)
        sys.path[:] = saved_path
        if saved_pythonpath is not None:
            os.environ["PYTHONPATH"] = saved_pythonpath
        # (4) The API modules keep their references; other code must not see the placeholders.
        for name in stubs:
            if isinstance(sys.modules.get(name), _MissingModule):
                del sys.modules[name]
    _init_without_language(blenderproc)
    return blenderproc


def _init_without_language(bproc: types.ModuleType) -> None:
    """`bproc.init()` minus its `preferences.view.language = "en_US"` line (5)."""
    import bpy
    from blenderproc.python.utility.GlobalStorage import GlobalStorage
    from blenderproc.python.utility.Initializer import _Initializer

    if GlobalStorage.is_in_storage("bproc_init_complete"):
        return
    bproc.clean_up(clean_up_camera=True)
    bpy.context.scene.render.engine = "CYCLES"
    bproc.renderer.set_render_devices(use_only_cpu=True)  # render.py picks the real device
    _Initializer.set_default_parameters()
    GlobalStorage.add("bproc_init_complete", True)
