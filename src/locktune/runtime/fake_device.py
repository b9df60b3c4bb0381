"""`fakegpu`: a second device kind backed by the CPU, so a machine without a GPU can see a tensor on the wrong one.

On a one-device machine every tensor is on the CPU, and code that forgets to move a tensor to the model's
device passes every test, then fails on the first GPU.  This module registers PyTorch's PrivateUse1 backend
under the name `fakegpu` (through `torch.utils.backend_registration`, in pure Python): its tensors hold a CPU
tensor inside and compute with CPU kernels, but they behave as a CUDA device does where it matters to us:
- an operation that mixes a `fakegpu` tensor with a CPU tensor (other than a 0-dim scalar, a copy, or the
  indices of an indexing op, which CUDA accepts too) raises "Expected all tensors to be on the same device";
- random operations draw from the device's own generator (`torch.fakegpu.get_rng_state`), not the CPU's, so a
  checkpoint that forgets the accelerator's RNG state does not resume exactly;
- a CPU `torch.Generator` passed to a random operation on the device is refused, as CUDA refuses it;
- `torch.autocast("fakegpu", dtype=torch.bfloat16)` casts as CUDA's autocast does (matrix products and
  convolutions in bfloat16, softmax, norms and losses in float32), so a loss that forgets to leave autocast
  loses the precision it would lose on a GPU;
- `torch.distributed` gets a backend for it (`fakeccl`, gloo underneath) that refuses CPU tensors, as NCCL does.

It is for tests and for `train.device=fakegpu` (CI runs the demo on it); `auto` never chooses it.  Numbers on
it equal the CPU's in float32: the same kernels run.  `register()` is idempotent; it needs the PrivateUse1
slot free (a process that already has a real PrivateUse1 backend, e.g. an NPU, cannot also have this one).
"""

from __future__ import annotations

import contextlib
import datetime
import threading

import torch
from torch.utils._pytree import tree_map

NAME = "fakegpu"
BACKEND = "fakeccl"
# One device per process, as with CUDA_VISIBLE_DEVICES set per rank: PyTorch's Python device guard knows index 0
# only.  Register before the process's first backward pass: autograd sizes its device queues once, then.
DEVICE_COUNT = 1

_lock = threading.Lock()
_registered = False
_current = 0
_generators: dict[int, torch.Tensor] = {}  # device index -> its generator's state (a CPU generator's format)

# CUDA accepts CPU tensors in these places: copies between devices, and index tensors of an indexing op.
_CROSS_DEVICE_OPS = {"aten::copy_", "aten::_to_copy", "aten::_copy_from", "aten::_copy_from_and_resize",
                     "aten::lift_fresh", "aten::lift_fresh_copy"}
_INDEX_OPS = {"aten::index", "aten::index_put", "aten::index_put_", "aten::_index_put_impl_",
              "aten::_unsafe_index", "aten::_unsafe_index_put"}
# CUDA autocast's lists (aten/src/ATen/autocast_mode.cpp), the part our towers and losses meet: overloads that
# run in the lower precision, and overloads that run in float32 whatever their inputs.
_LOWER_PRECISION_OPS = ["mm", "addmm", "bmm", "baddbmm", "matmul", "linear", "conv1d", "conv2d", "einsum",
                        "scaled_dot_product_attention"]
_FLOAT32_OPS = ["softmax.int", "log_softmax.int", "layer_norm", "group_norm", "exp", "log", "log1p", "pow.Tensor_Scalar",
                "rsqrt", "reciprocal", "logsumexp", "cumsum", "sum", "sum.dim_IntList", "cross_entropy_loss",
                "nll_loss", "mse_loss", "binary_cross_entropy_with_logits", "cosine_similarity", "linalg_vector_norm"]


def _index(device) -> int:
    device = torch.device(device) if device is not None else None
    return _current if device is None or device.index is None else device.index


class _DeviceModule:
    """`torch.fakegpu`: what PyTorch (fork_rng, autocast, Module.to) and locktune ask of a device module."""

    @staticmethod
    def is_available() -> bool:
        return True

    @staticmethod
    def is_initialized() -> bool:
        return True

    @staticmethod
    def _is_in_bad_fork() -> bool:
        return False

    @staticmethod
    def device_count() -> int:
        return DEVICE_COUNT

    @staticmethod
    def current_device() -> int:
        return _current

    @staticmethod
    def set_device(device) -> None:
        global _current
        _current = _index(device)

    @staticmethod
    def synchronize(device=None) -> None:
        pass

    @staticmethod
    @contextlib.contextmanager
    def device(device):
        """`with torch.fakegpu.device(i):` makes `i` current inside, as torch.cuda.device does."""
        global _current
        before, _current = _current, _index(device)
        try:
            yield
        finally:
            _current = before

    @staticmethod
    def get_rng_state(device=None) -> torch.Tensor:
        return _state(_index(device)).clone()

    @staticmethod
    def set_rng_state(state: torch.Tensor, device=None) -> None:
        _generators[_index(device)] = state.clone()

    @staticmethod
    def manual_seed(seed: int) -> None:
        _generators[_current] = torch.Generator().manual_seed(int(seed)).get_state()

    @staticmethod
    def manual_seed_all(seed: int) -> None:
        for index in range(DEVICE_COUNT):
            _generators[index] = torch.Generator().manual_seed(int(seed)).get_state()

    @staticmethod
    def get_amp_supported_dtype() -> list[torch.dtype]:
        return [torch.bfloat16, torch.float16]


def _state(index: int) -> torch.Tensor:
    if index not in _generators:  # a fresh device generator: seeded differently from the CPU's default
        _generators[index] = torch.Generator().manual_seed(0x5EED + index).get_state()
    return _generators[index]


class FakeDeviceTensor(torch.Tensor):
    """A tensor on `fakegpu:i` whose data is the CPU tensor `inner`."""

    @staticmethod
    def __new__(cls, inner: torch.Tensor, index: int = 0):
        out = torch.Tensor._make_wrapper_subclass(
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            layout=inner.layout, device=torch.device(NAME, index), requires_grad=inner.requires_grad)
        out.inner = inner
        out.index = index
        return out

    def __repr__(self, *, tensor_contents=None) -> str:
        return f"{self.inner!r} on {NAME}:{self.index}"

    def tolist(self):  # as a CUDA tensor's: a copy to the host
        return self.cpu().tolist()

    def numpy(self, *, force: bool = False):
        raise TypeError(f"can't convert {self.device} device type tensor to numpy. Use Tensor.cpu() to copy the "
                        "tensor to host memory first.")

    def __tensor_flatten__(self):
        return ["inner"], self.index

    @staticmethod
    def __tensor_unflatten__(inner, index, outer_size, outer_stride):
        return FakeDeviceTensor(inner["inner"], index)

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = func._schema.name
        indices = set()

        def unwrap(x, position=None):
            if isinstance(x, FakeDeviceTensor):
                indices.add(x.index)
                return x.inner
            if isinstance(x, torch.Tensor) and x.device.type == "cpu" and x.dim() > 0 \
                    and name not in _CROSS_DEVICE_OPS and not (name in _INDEX_OPS and position != 0):
                _wrong_device(func, "cpu")
            return x

        inner_args = [tree_map(lambda x, i=i: unwrap(x, i), a) for i, a in enumerate(args)]
        inner_kwargs = {k: tree_map(unwrap, v) for k, v in kwargs.items()}
        if len(indices) > 1:
            _wrong_device(func, ", ".join(f"{NAME}:{i}" for i in sorted(indices)))
        index = indices.pop() if indices else _current
        generator = inner_kwargs.get("generator")
        if generator is not None and generator.device.type != NAME:
            raise RuntimeError(f"Expected a '{NAME}' device type for generator but found '{generator.device.type}'")
        if torch.Tag.nondeterministic_seeded in func.tags:
            out = _with_device_generator(index, func, inner_args, inner_kwargs)
        else:
            out = func(*inner_args, **inner_kwargs)
        target = kwargs.get("device")
        if target is not None and torch.device(target).type != NAME:  # .cpu(), .to("cpu")
            return out
        if torch.is_inference_mode_enabled():
            # A view of a normal tensor made in inference mode is a normal tensor: a wrapper made here would be
            # an inference tensor, which autograd's view tracking refuses.  (Costs nothing on a real device.)
            with torch.inference_mode(False):
                return tree_map(lambda x: _wrap(x, index), out)
        return tree_map(lambda x: _wrap(x, index), out)


def _wrong_device(func, other: str):
    raise RuntimeError(f"Expected all tensors to be on the same device, but found at least two devices, "
                       f"{NAME} and {other}! (when checking arguments for {func._schema.name})")


def _autocast_kernel(overload, source: tuple, dtype_of):
    """Autocast for the device, as CUDA's: cast the device's float tensors of a `source` dtype to `dtype_of()`,
    then run the op below autocast.  Above autograd, so the casts are differentiated."""
    def kernel(*args, **kwargs):
        dtype = dtype_of()
        args, kwargs = tree_map(lambda x: x.to(dtype) if isinstance(x, torch.Tensor) and x.device.type == NAME
                                and x.dtype in source else x, (args, kwargs))
        with torch._C._ExcludeDispatchKeyGuard(torch._C.DispatchKeySet(torch._C.DispatchKey.AutocastPrivateUse1)):
            return overload(*args, **kwargs)
    return kernel


def _register_autocast(aten) -> None:
    for name in _LOWER_PRECISION_OPS + _FLOAT32_OPS:
        packet, _, overload = name.partition(".")
        op = getattr(getattr(torch.ops.aten, packet), overload or "default")
        if name in _LOWER_PRECISION_OPS:
            kernel = _autocast_kernel(op, (torch.float32,), lambda: torch.get_autocast_dtype(NAME))
        else:
            kernel = _autocast_kernel(op, (torch.bfloat16, torch.float16), lambda: torch.float32)
        aten.impl(name, kernel, "AutocastPrivateUse1")


def _wrap(x, index: int):
    if isinstance(x, torch.Tensor) and not isinstance(x, FakeDeviceTensor) and x.device.type == "cpu":
        return FakeDeviceTensor(x, index)
    return x


def _with_device_generator(index: int, func, args, kwargs):
    """Run a random op with the CPU kernel, drawing from the device's generator instead of the CPU's."""
    with _lock:
        cpu = torch.default_generator.get_state()
        torch.default_generator.set_state(_state(index))
        try:
            return func(*args, **kwargs)
        finally:
            _generators[index] = torch.default_generator.get_state()
            torch.default_generator.set_state(cpu)


def _to_cpu_kwargs(kwargs: dict) -> tuple[dict, int]:
    index = _current
    if "device" in kwargs and kwargs["device"] is not None:
        index = _index(kwargs["device"])
        kwargs = {**kwargs, "device": torch.device("cpu")}
    kwargs.pop("pin_memory", None)
    return kwargs, index


def _factory_fallback(op, *args, **kwargs):
    """Any operation that reaches the PrivateUse1 kernel itself (factories: empty, zeros, arange, randperm...):
    run on the CPU, result on the device; random ones draw from the device's generator."""
    kwargs, index = _to_cpu_kwargs(kwargs)
    generator = kwargs.get("generator")
    if generator is not None and generator.device.type != NAME:
        raise RuntimeError(f"Expected a '{NAME}' device type for generator but found '{generator.device.type}'")
    unwrapped = tree_map(lambda x: x.inner if isinstance(x, FakeDeviceTensor) else x, args)
    if torch.Tag.nondeterministic_seeded in op.tags:
        out = _with_device_generator(index, op, unwrapped, kwargs)
    else:
        out = op(*unwrapped, **kwargs)
    return tree_map(lambda x: _wrap(x, index), out)


def _copy_from(src, dst, non_blocking=False):
    data = src.inner if isinstance(src, FakeDeviceTensor) else src
    (dst.inner if isinstance(dst, FakeDeviceTensor) else dst).copy_(data)
    return dst


def _copy_from_and_resize(src, dst):
    data = src.inner if isinstance(src, FakeDeviceTensor) else src
    target = dst.inner if isinstance(dst, FakeDeviceTensor) else dst
    target.resize_(data.shape).copy_(data)
    return dst


_libraries: list = []  # kept alive: a torch.library.Library unregisters its kernels when collected


def register() -> None:
    """Make `fakegpu` a device (and `fakeccl` its process-group backend) in this process; idempotent."""
    global _registered
    with _lock:
        if _registered:
            return
        current = torch._C._get_privateuse1_backend_name()
        if current not in ("privateuseone", NAME):
            raise RuntimeError(f"the PrivateUse1 device slot is taken by '{current}'; {NAME} cannot be registered")
        from torch.utils.backend_registration import _setup_privateuseone_for_python_backend

        _setup_privateuseone_for_python_backend(NAME, backend_module=_DeviceModule())
        aten = torch.library.Library("aten", "IMPL")
        aten.impl("_copy_from", _copy_from, "PrivateUse1")
        aten.impl("_copy_from_and_resize", _copy_from_and_resize, "PrivateUse1")
        anything = torch.library.Library("_", "IMPL")
        anything.fallback(_factory_fallback, "PrivateUse1")
        anything.fallback(torch.library.fallthrough_kernel, "AutocastPrivateUse1")
        _register_autocast(aten)
        _libraries.extend([aten, anything])
        _register_process_group_backend()
        _registered = True


# ---------------------------------------------------------------------------------------------- torch.distributed
def _register_process_group_backend() -> None:
    import torch.distributed as dist

    if not dist.is_available():
        return
    dist.Backend.register_backend(BACKEND, _create_group, devices=[NAME])


def _create_group(store, rank: int, world_size: int, timeout: datetime.timedelta):
    import torch.distributed as dist

    return _fake_collectives(dist.ProcessGroupGloo(store, rank, world_size, timeout), rank, world_size)


def _inner_tensors(tensors, what: str) -> list:
    out = []
    for t in tensors:
        if isinstance(t, (list, tuple)):
            out.append(_inner_tensors(t, what))
        elif isinstance(t, FakeDeviceTensor):
            out.append(t.inner)
        else:
            raise RuntimeError(f"{BACKEND} ({what}): tensors must be on {NAME}, got a {t.device.type} tensor "
                               "(as NCCL refuses CPU tensors)")
    return out


# Collective -> its options class: each is relayed to gloo with the device tensors' CPU insides.
_COLLECTIVES = {"allreduce": "AllreduceOptions", "allreduce_coalesced": "AllreduceCoalescedOptions",
                "broadcast": "BroadcastOptions", "allgather": "AllgatherOptions", "_allgather_base": "AllgatherOptions",
                "allgather_into_tensor_coalesced": "AllgatherOptions", "reduce_scatter": "ReduceScatterOptions",
                "_reduce_scatter_base": "ReduceScatterOptions",
                "reduce_scatter_tensor_coalesced": "ReduceScatterOptions", "gather": "GatherOptions",
                "scatter": "ScatterOptions"}


def _relay(name: str, options: str):
    """A collective that checks its tensors are on the device (as NCCL does), then runs gloo's on their insides."""
    def collective(self, *args):
        import torch.distributed as dist

        tensors = [a for a in args if isinstance(a, (list, tuple, torch.Tensor))]
        given = [a for a in args if not isinstance(a, (list, tuple, torch.Tensor))]
        opts = given[0] if given and given[0] is not None else getattr(dist, options)()
        return getattr(self.gloo, name)(*_inner_tensors(tensors, name), opts)

    collective.__name__ = name
    return collective


def _make_collectives_class():
    import torch.distributed as dist

    class FakeCollectives(dist.ProcessGroup):
        """Collectives on `fakegpu` tensors: checked (device tensors only, as NCCL), then done by gloo on the
        CPU tensors inside them (in place, so the device tensors see the result)."""

        def __init__(self, gloo, rank: int, world_size: int):
            super().__init__(rank, world_size)
            self.gloo = gloo
            # The group's device kind: object collectives (all_gather_object) then move their bytes to the
            # device, as they do for NCCL, instead of sending CPU tensors (which this group refuses).
            self._register_backend(torch.device(NAME), dist.ProcessGroup.BackendType.CUSTOM, gloo)

        def getBackendName(self) -> str:
            return BACKEND

        def barrier(self, opts=None):
            return self.gloo.barrier(dist.BarrierOptions())

    for name, options in _COLLECTIVES.items():
        setattr(FakeCollectives, name, _relay(name, options))
    return FakeCollectives


_collectives_class = None


def _fake_collectives(gloo, rank: int, world_size: int):
    global _collectives_class
    if _collectives_class is None:
        _collectives_class = _make_collectives_class()
    return _collectives_class(gloo, rank, world_size)
