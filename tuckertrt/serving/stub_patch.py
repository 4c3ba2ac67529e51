"""Remedies for the Python-backend stub that PyTriton runs inside ``tritonserver`` (applied by ``serve``).

1. The stub embeds a libpython of the running interpreter's version but not its build: with pyenv's 3.11.7 it
   loads Debian's 3.11.2, whose ``_thread.RLock`` lacks ``_recursion_count`` that the 3.11.7 standard library
   calls (PyTriton issue #51). Putting this interpreter's own shared libpython first on ``LD_LIBRARY_PATH``
   makes the stub run the very interpreter (and site-packages) that runs ``serve``.
2. The stub's numpy binding predates numpy 2 (it reads numpy 2 arrays as empty). The proxy model that PyTriton
   copies into its model store is given tensor exchange through DLPack instead, and error messages reduced to
   their last line (the traceback stays in the server's log).
3. Each input's declared size is checked there, on a view of the request, before PyTriton copies it to the
   serving process (tritonserver 2.45, bundled with PyTriton 0.5, passes a shape header that the body does not
   match on to the backend).
"""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

PROXY_PATCH = '''

# --- added by tuckertrt.serving.stub_patch: DLPack tensor exchange, input size limit, one-line errors ---
class _TuckerTRTStubUtils:
    def __init__(self, utils):
        self._utils = utils

    def __getattr__(self, name):
        return getattr(self._utils, name)

    def Tensor(self, name, array):  # noqa: N802 (the name pb_utils has)
        import numpy as np
        import torch.utils.dlpack

        array = np.ascontiguousarray(array)
        if array.dtype.hasobject:
            return self._utils.Tensor(name, array)
        return self._utils.Tensor.from_dlpack(name, torch.utils.dlpack.to_dlpack(torch.from_numpy(array)))

    def get_input_tensor_by_name(self, request, name):
        tensor = self._utils.get_input_tensor_by_name(request, name)
        return None if tensor is None else _TuckerTRTInput(name, tensor)

    def TritonError(self, error, *args):  # noqa: N802
        return self._utils.TritonError(_tuckertrt_last_line(error), *args)

    def TritonModelException(self, message):  # noqa: N802 (constructed, then raised)
        return self._utils.TritonModelException(_tuckertrt_last_line(message))


def _tuckertrt_last_line(text):
    """A traceback's message without the traceback: what the client is told."""
    import re

    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    return re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1]) if lines else str(text)


class _TuckerTRTInput:
    MAX_ELEMENTS = @MAX_ELEMENTS@

    def __init__(self, name, tensor):
        self._name, self._tensor = name, tensor

    def as_numpy(self):  # every input of the served model is numeric, which DLPack carries
        import numpy as np

        view = np.from_dlpack(self._tensor)  # a view of the request: nothing copied or allocated yet
        if view.size > self.MAX_ELEMENTS:
            raise ValueError(f"input {self._name} declares shape {'x'.join(map(str, view.shape))} = "
                             f"{view.nbytes} bytes, over the server's limit of {self.MAX_ELEMENTS} voxels")
        return view


pb_utils = _TuckerTRTStubUtils(pb_utils)
_tuckertrt_execute = TritonPythonModel.execute


def _tuckertrt_execute_answering_errors(self, requests):
    """A failed batch answers each request with its one-line error (raising would add the stub's stack)."""
    try:
        return _tuckertrt_execute(self, requests)
    except Exception as e:
        return [pb_utils.InferenceResponse(error=pb_utils.TritonError(str(e))) for _ in requests]


TritonPythonModel.execute = _tuckertrt_execute_answering_errors
'''


def prepare_stub_environment() -> None:
    """Point the stub at this interpreter's shared libpython (set in this process's environment, which PyTriton
    passes on to ``tritonserver`` and its stubs)."""
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    if not (sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and soname and (Path(libdir) / soname).exists()):
        return  # a static interpreter: the stub uses the system's libpython of the same version
    paths = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    if libdir not in paths:
        os.environ["LD_LIBRARY_PATH"] = ":".join([libdir, *paths])


def patch_proxy_model(model_dir: Path, max_elements: int) -> None:
    """Append :data:`PROXY_PATCH` (inputs of at most ``max_elements``) to the proxy ``model.py`` PyTriton
    generated for a bound model."""
    files = sorted(model_dir.glob("*/model.py"))
    if not files:
        raise RuntimeError(f"PyTriton wrote no proxy model.py under {model_dir}")
    for path in files:
        path.write_text(path.read_text() + PROXY_PATCH.replace("@MAX_ELEMENTS@", str(int(max_elements))))

