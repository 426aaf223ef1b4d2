"""Generated code and what its failures mean.

`compiled` wraps `torch.compile`. A model that runs generated code (Triton kernels, `torch.compile`)
calls `fall_back` with what that code raised: a build failure (Triton or Inductor failing to compile,
a missing compiler or module) is logged once and the model goes on with plain torch ops; anything else
(running out of memory, a device fault, a bug) is raised again, unchanged. `is_oom` and
`is_device_failure` sort the errors of a forward pass for the batch runner. `use_kernel_cache(folder)`
keeps what Triton and Inductor build in `folder` (the workflow's: beside the converted models), so a
kernel is built once for every job and machine that shares the models folder, not in every job.
"""

import logging
import os
import subprocess
import warnings
from pathlib import Path

import torch

from virnucpro.errors import first_line

log = logging.getLogger("virnucpro")

# modules whose exceptions mean that generated code could not be built
_BUILD_ERROR_MODULES = ("triton.compiler", "torch._dynamo.exc", "torch._inductor.exc")
_BUILD_ERRORS = {("triton.runtime.errors", "OutOfResources"), ("triton.runtime.errors", "PTXASError")}
_DEVICE_FAILURE_MARKS = ("CUDA error", "CUDA driver error", "CUBLAS_STATUS", "CUDNN_STATUS", "device-side assert",
                         "NCCL error", "no CUDA-capable device", "CUDA-capable device(s) is/are busy")


KERNEL_CACHES = {"TRITON_CACHE_DIR": "triton", "TORCHINDUCTOR_CACHE_DIR": "inductor"}  # variable -> subfolder


def use_kernel_cache(folder):
    """Point this process's Triton and Inductor caches (read when they first build) into `folder`; where
    it cannot be written, keep their defaults (one warning line). Returns whether the folder is used."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        usable = os.access(folder, os.W_OK | os.X_OK)
    except OSError:
        usable = False
    if not usable:
        log.warning("kernel cache %s cannot be written: kernels are built into the default caches", folder)
        return False
    for variable, sub in KERNEL_CACHES.items():
        os.environ[variable] = str(folder / sub)
    return True


def compiled(fn):
    """`torch.compile(fn)`, without the DeprecationWarnings that torch's first `torch.compile` prints.

    `torch.compile` imports Inductor, which imports `torch/utils/mkldnn.py`; that module's TorchScript
    classes carry `@torch.jit.script_method` decorators, and each warns that TorchScript is deprecated.
    The warning is about torch's own module, not about `fn`, so exactly that message from
    `torch.jit._script` is ignored, only while Inductor is imported.
    """
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore",
            message=r"`torch\.jit\.script_method` is",
            category=DeprecationWarning,
            module=r"torch\.jit\._script",
        )
        return torch.compile(fn)


def is_oom(exc):
    """True when `exc` is the device running out of memory."""
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def is_device_failure(exc):
    """True for a device fault other than running out of memory: a lost or reset GPU, an ECC or driver
    error, a failed kernel. The CUDA context is unusable afterwards, so the job must end."""
    accelerator_error = getattr(torch, "AcceleratorError", ())
    if isinstance(exc, accelerator_error) or isinstance(exc, getattr(torch.cuda, "CudaError", ())):
        return not is_oom(exc)
    return isinstance(exc, RuntimeError) and not is_oom(exc) and any(m in str(exc) for m in _DEVICE_FAILURE_MARKS)


def is_build_failure(exc):
    """True when `exc`, or an exception it was raised from, says that generated code could not be built:
    a Triton compilation error, an Inductor or Dynamo failure, a compiler process that failed, a missing
    module. An out-of-memory error or a device fault is never one."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if is_oom(exc) or is_device_failure(exc):
            return False
        if isinstance(exc, (ImportError, subprocess.CalledProcessError)):
            return True
        kind = type(exc)
        if kind.__module__.startswith(_BUILD_ERROR_MODULES) or (kind.__module__, kind.__name__) in _BUILD_ERRORS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def fall_back(exc, what, model):
    """Called with an exception raised by generated code (`what`: torch.compile, the Triton kernels): a
    build failure is logged once and the caller then runs `model` on plain torch ops; anything else is
    raised again."""
    if not is_build_failure(exc):
        raise exc
    log.warning("%s failed (%s); running %s on plain torch ops", what, first_line(exc), model)
