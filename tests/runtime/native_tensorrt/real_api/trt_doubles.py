"""Doubles made from the real TensorRT and cuda-python classes of the version under test.

What they prove: that our code touches only attributes the real API of this version has, calls its
methods with arguments its signatures accept, and makes the expected call sequence. They do not
prove that an engine was built or ran: nothing here reaches a GPU.

- `TrtApi.double(name)`: `create_autospec(real class, instance=True, spec_set=True)`: an attribute the
  class lacks raises AttributeError. Every call made on a double is checked afterwards against the
  real method's pybind11 signature(s) (argument count, keyword names, argument types).
- `TrtApi.module()`: stands in for `import tensorrt`: the real module's enums and helpers, the doubles
  for the classes whose construction needs a GPU (Builder, Runtime, OnnxParser); it records every
  attribute used, and every one probed and found absent.
- `SimulatedCudart`: the real cuda-python runtime module's types and enums, with memory and streams
  simulated in host memory (pointer ranges checked) and events read from a simulated device clock;
  each call is checked against the real signature.
"""

from __future__ import annotations

import ctypes
import inspect
import re
from typing import Any
from unittest import mock

import numpy as np

_SIG = re.compile(r"^(?:\d+\.\s+)?(\w+)\((.*)\)\s*->\s*(.+)$")


class ApiMismatch(AssertionError):
    pass


# --- pybind11 signatures ---------------------------------------------------------------------------


def _split_top(text: str) -> list[str]:
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(<":
            depth += 1
        elif ch in "])>":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    if "".join(cur).strip():
        parts.append("".join(cur).strip())
    return parts


def signatures(cls: type, name: str) -> list[list[tuple[str, str, bool]]]:
    """Each overload of `cls.name` as [(param, type, has_default)], `self` dropped."""
    doc = getattr(cls, name).__doc__ or ""
    sigs = []
    for line in doc.splitlines():
        m = _SIG.match(line.strip())
        if not m or m.group(1) != name:
            continue
        params = []
        for part in _split_top(m.group(2)):
            if part in ("*args", "**kwargs"):
                continue
            head, _, default = part.partition("=")
            pname, _, ptype = head.partition(":")
            params.append((pname.strip(), ptype.strip(), bool(default.strip())))
        if params and params[0][0] == "self":
            params = params[1:]
        sigs.append(params)
    return sigs


class TypeChecker:
    def __init__(self, trt: Any) -> None:
        self.trt = trt

    def resolve(self, type_name: str) -> Any:
        for prefix in ("tensorrt_bindings.tensorrt.", "tensorrt.tensorrt.", "tensorrt."):
            if type_name.startswith(prefix):
                obj: Any = self.trt
                for part in type_name[len(prefix) :].split("."):
                    obj = getattr(obj, part, None)
                return obj if isinstance(obj, type) else None
        return None

    def accepts(self, type_name: str, value: Any) -> bool:
        if type_name in ("int", "typing.SupportsInt"):
            return isinstance(value, (int, np.integer)) and not isinstance(value, mock.Base)
        if type_name in ("float", "typing.SupportsFloat"):
            return isinstance(value, (int, float, np.floating))
        if type_name == "bool":
            return isinstance(value, (bool, np.bool_))
        if type_name == "str":
            return isinstance(value, str)
        if type_name in ("buffer", "typing_extensions.Buffer", "collections.abc.Buffer"):
            try:
                memoryview(value)
            except TypeError:
                return False
            return True
        if type_name in ("tuple", "list"):
            return isinstance(value, tuple if type_name == "tuple" else list)
        cls = self.resolve(type_name)
        if cls is None:
            return True  # a type this checker does not model: accept
        if cls.__name__ in ("Dims", "Dims32", "Dims64") and isinstance(value, (tuple, list)):
            return all(isinstance(v, (int, np.integer)) for v in value)
        spec = getattr(value, "_spec_class", None)
        if spec is not None:
            return issubclass(spec, cls)
        return isinstance(value, cls)


def check_call(trt: Any, version: str, cls: type, name: str, args: tuple, kwargs: dict) -> None:
    """Raise ApiMismatch unless (args, kwargs) fit one overload of the real `cls.name`."""
    sigs = signatures(cls, name)
    if not sigs:
        return  # no pybind11 signature to compare with (plain Python attribute)
    checker = TypeChecker(trt)
    problems = []
    for params in sigs:
        problem = _fit(checker, params, args, kwargs)
        if problem is None:
            return
        problems.append(problem)
    shown = ", ".join([*map(repr, args), *(f"{k}={v!r}" for k, v in kwargs.items())])
    raise ApiMismatch(
        f"TensorRT {version}: {cls.__name__}.{name}({shown}) fits no signature of the real API: "
        + " | ".join(problems)
    )


def _fit(checker: TypeChecker, params: list, args: tuple, kwargs: dict) -> str | None:
    if len(args) > len(params):
        return f"{len(args)} positional arguments, at most {len(params)}"
    bound = dict(zip([p[0] for p in params], args, strict=False))
    for key, value in kwargs.items():
        if key not in [p[0] for p in params]:
            return f"no parameter {key!r}"
        if key in bound:
            return f"{key!r} given twice"
        bound[key] = value
    for pname, ptype, has_default in params:
        if pname not in bound:
            if not has_default:
                return f"missing {pname!r}"
        elif not checker.accepts(ptype, bound[pname]):
            return f"{pname!r} should be {ptype}, got {type(bound[pname]).__name__}"
    return None


# --- TensorRT doubles and the module stand-in ----------------------------------------------------------


class TrtApi:
    """Factory and ledger of the doubles of one TensorRT version."""

    def __init__(self, trt: Any) -> None:
        self.trt = trt
        self.version = str(trt.__version__)
        self.used: set[str] = set()
        self.absent: set[str] = set()
        self._doubles: list[tuple[type, Any]] = []
        self._props: list[tuple[type, str, mock.PropertyMock]] = []

    def double(self, class_name: str, **properties: Any) -> Any:
        """An autospec instance of the real class; `properties` are read-only attributes it returns."""
        cls = getattr(self.trt, class_name)
        dbl = mock.create_autospec(cls, instance=True, spec_set=True)
        for name, value in properties.items():
            self.set_property(dbl, name, value)
        self._doubles.append((cls, dbl))
        return dbl

    def set_property(self, dbl: Any, name: str, value: Any) -> None:
        cls = dbl._spec_class
        if not hasattr(cls, name):
            raise AttributeError(f"TensorRT {self.version}: {cls.__name__} has no attribute {name!r}")
        prop = mock.PropertyMock(return_value=value)
        setattr(type(dbl), name, prop)
        self._props.append((cls, name, prop))

    def constructor(self, class_name: str, instance: Any) -> Any:
        """Stands in for the class itself: checks the constructor's arguments, returns `instance`."""
        cls = getattr(self.trt, class_name)
        api = self

        def construct(*args: Any, **kwargs: Any) -> Any:
            check_call(api.trt, api.version, cls, "__init__", args, kwargs)
            api.used.add(f"{class_name}()")
            return instance

        return construct

    def module(self, **classes: Any) -> ModuleProxy:
        return ModuleProxy(self, classes)

    def verify(self) -> None:
        """Check every call made on every double against the real signatures; record what was used."""
        for cls, dbl in self._doubles:
            for name, args, kwargs in dbl.mock_calls:
                if "()." in name and self._is_double(getattr(dbl, name.split("()")[0]).return_value):
                    continue  # a call on a returned double: checked as that double's own call
                if "." in name or "(" in name:
                    raise ApiMismatch(
                        f"TensorRT {self.version}: unconfigured double result used: {cls.__name__}.{name}"
                    )
                check_call(self.trt, self.version, cls, name, args, kwargs)
                self.used.add(f"{cls.__name__}.{name}")
        for cls, name, prop in self._props:
            if prop.call_count:
                self.used.add(f"{cls.__name__}.{name}")

    def _is_double(self, obj: Any) -> bool:
        return any(obj is dbl for _, dbl in self._doubles)

    def report(self) -> dict[str, Any]:
        return {"tensorrt": self.version, "used": sorted(self.used), "probed_absent": sorted(self.absent)}


class ModuleProxy:
    """`import tensorrt` as our code sees it during a test: records each attribute it touches."""

    def __init__(self, api: TrtApi, classes: dict[str, Any]) -> None:
        self._api = api
        self._classes = classes

    def __getattr__(self, name: str) -> Any:
        api = self._api
        if name in self._classes:
            api.used.add(name)
            return self._classes[name]
        if name.startswith("__") and name != "__version__":
            raise AttributeError(name)
        try:
            value = getattr(api.trt, name)
        except AttributeError:
            api.absent.add(name)
            raise AttributeError(
                f"TensorRT {api.version}: module 'tensorrt' has no attribute {name!r}"
            ) from None
        api.used.add(name)
        return TypeProxy(api, name, value) if isinstance(value, type) else value


class TypeProxy:
    """A real class or enum of the module, with attribute use recorded (`BuilderFlag.FP16`)."""

    def __init__(self, api: TrtApi, path: str, real: type) -> None:
        self._api, self._path, self._real = api, path, real

    def __getattr__(self, name: str) -> Any:
        try:
            value = getattr(self._real, name)
        except AttributeError:
            self._api.absent.add(f"{self._path}.{name}")
            raise AttributeError(
                f"TensorRT {self._api.version}: {self._path} has no attribute {name!r}"
            ) from None
        self._api.used.add(f"{self._path}.{name}")
        return value

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        check_call(self._api.trt, self._api.version, self._real, "__init__", args, kwargs)
        self._api.used.add(f"{self._path}()")
        return self._real(*args, **kwargs)


# --- cuda-python ---------------------------------------------------------------------------------------


class SimulatedCudart:
    """The cuda-python runtime module with a simulated device: allocations are host buffers.

    Types and enums are the real ones (cudaError_t, cudaMemcpyKind, cudaStream_t, cudaDeviceProp);
    each call is checked against the real function's signature. Copies are bounds-checked against
    the allocations, so an off-by-one in our batching shows up as a failure, not a silent overrun.

    Stream work happens at once, in call order, on a simulated device clock: each copy takes
    `copy_ms`, each `launch` (the rig's execute_async_v3) the time it is given. An event takes the
    clock's time when recorded and is complete once its stream or the event is synchronized, so
    cudaEventElapsedTime answers cudaErrorNotReady before that, as the real one may. `timeline`
    lists the stream work in order: ("copy", kind, stream), ("record", event, stream), ("launch", name, stream).
    """

    def __init__(
        self, real: Any, gpu_name: str = "NVIDIA Orin (simulated)", capability: tuple[int, int] = (8, 7)
    ):
        self.real = real
        self.gpu_name, self.capability = gpu_name, capability
        self.allocations: dict[int, ctypes.Array] = {}
        self.streams: set[int] = set()
        self.calls: list[tuple[str, tuple]] = []
        self.fail: dict[str, Any] = {}  # function name -> cudaError_t to return instead
        self._next_stream = 0x5000
        self.clock_ms = 0.0
        self.copy_ms = 5.0  # long enough that a timing that takes a copy in shows it
        self.events: dict[int, dict[str, Any]] = {}  # live events: handle -> stream, at (ms), done
        self.timeline: list[tuple[str, Any, int]] = []
        self._next_event = 0x9000

    def __getattr__(self, name: str) -> Any:
        if hasattr(self.real, name):
            value = getattr(self.real, name)
            if not isinstance(value, type) and callable(value) and name != "cudaGetErrorString":
                raise AttributeError(f"SimulatedCudart does not simulate {name}; add it to the double")
            return value  # types and enums: the real ones; cudaGetErrorString works without a GPU
        raise AttributeError(f"cuda-python {self.bindings_version}: runtime module has no attribute {name!r}")

    @property
    def bindings_version(self) -> str:
        import cuda.bindings

        return getattr(cuda.bindings, "__version__", "?")

    @property
    def ok(self) -> Any:
        return self.real.cudaError_t.cudaSuccess

    def _enter(self, name: str, *args: Any) -> Any:
        inspect.signature(getattr(self.real, name)).bind(*args)  # TypeError if the real one would refuse
        self.calls.append((name, args))
        return self.fail.get(name)

    def cudaGetDeviceCount(self) -> tuple:
        if err := self._enter("cudaGetDeviceCount"):
            return (err, 0)
        return (self.ok, 1)

    def cudaGetDevice(self) -> tuple:
        if err := self._enter("cudaGetDevice"):
            return (err, 0)
        return (self.ok, 0)

    def cudaGetDeviceProperties(self, device: int) -> tuple:
        if err := self._enter("cudaGetDeviceProperties", device):
            return (err, None)
        prop = self.real.cudaDeviceProp()
        prop.name = self.gpu_name.encode().ljust(256, b"\0")
        prop.major, prop.minor = self.capability
        return (self.ok, prop)

    def cudaMalloc(self, size: int) -> tuple:
        if err := self._enter("cudaMalloc", size):
            return (err, 0)
        buf = (ctypes.c_byte * size)()
        addr = ctypes.addressof(buf)
        self.allocations[addr] = buf
        return (self.ok, addr)

    def cudaFree(self, ptr: int) -> tuple:
        self._enter("cudaFree", ptr)
        assert ptr in self.allocations, f"cudaFree of {ptr:#x}, which was not allocated (or freed twice)"
        del self.allocations[ptr]
        return (self.ok,)

    def cudaStreamCreate(self) -> tuple:
        if err := self._enter("cudaStreamCreate"):
            return (err, None)
        self._next_stream += 0x10
        self.streams.add(self._next_stream)
        return (self.ok, self.real.cudaStream_t(self._next_stream))

    def cudaStreamSynchronize(self, stream: Any) -> tuple:
        self._enter("cudaStreamSynchronize", stream)
        assert int(stream) in self.streams, "synchronize on a stream that does not exist"
        for event in self.events.values():
            if event["stream"] == int(stream):
                event["done"] = True
        return (self.ok,)

    def cudaStreamDestroy(self, stream: Any) -> tuple:
        self._enter("cudaStreamDestroy", stream)
        self.streams.remove(int(stream))
        return (self.ok,)

    def cudaMemcpyAsync(self, dst: int, src: int, count: int, kind: Any, stream: Any) -> tuple:
        self._enter("cudaMemcpyAsync", dst, src, count, kind, stream)
        assert int(stream) in self.streams, "copy on a stream that does not exist"
        if kind == self.real.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self.check_range(dst, count)
        elif kind == self.real.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            self.check_range(src, count)
        else:
            raise AssertionError(f"unexpected copy kind {kind}")
        ctypes.memmove(dst, src, count)
        self.timeline.append(("copy", kind.name, int(stream)))
        self.clock_ms += self.copy_ms
        return (self.ok,)

    def launch(self, name: str, stream: int, ms: float) -> None:
        """Device work queued on `stream` by something other than cuda-python (TensorRT's enqueue)."""
        assert stream in self.streams, f"{name} on a stream that does not exist"
        self.timeline.append(("launch", name, stream))
        self.clock_ms += ms

    def cudaEventCreate(self) -> tuple:
        if err := self._enter("cudaEventCreate"):
            return (err, None)
        self._next_event += 0x10
        self.events[self._next_event] = {"stream": None, "at": None, "done": False}
        return (self.ok, self.real.cudaEvent_t(self._next_event))

    def _event(self, event: Any) -> dict[str, Any]:
        assert isinstance(event, self.real.cudaEvent_t), f"an event should be a cudaEvent_t, not {event!r}"
        assert int(event) in self.events, "an event that was not created (or was destroyed)"
        return self.events[int(event)]

    def cudaEventRecord(self, event: Any, stream: Any) -> tuple:
        self._enter("cudaEventRecord", event, stream)
        state = self._event(event)
        assert int(stream) in self.streams, "event recorded on a stream that does not exist"
        state.update(stream=int(stream), at=self.clock_ms, done=False)
        self.timeline.append(("record", int(event), int(stream)))
        return (self.ok,)

    def cudaEventSynchronize(self, event: Any) -> tuple:
        self._enter("cudaEventSynchronize", event)
        self._event(event)["done"] = True
        return (self.ok,)

    def cudaEventElapsedTime(self, start: Any, end: Any) -> tuple:
        self._enter("cudaEventElapsedTime", start, end)
        first, last = self._event(start), self._event(end)
        if first["at"] is None or last["at"] is None:
            return (self.real.cudaError_t.cudaErrorInvalidResourceHandle, 0.0)
        if not (first["done"] and last["done"]):
            return (self.real.cudaError_t.cudaErrorNotReady, 0.0)
        return (self.ok, float(last["at"] - first["at"]))

    def cudaEventDestroy(self, event: Any) -> tuple:
        self._enter("cudaEventDestroy", event)
        self._event(event)
        del self.events[int(event)]
        return (self.ok,)

    def check_range(self, ptr: int, count: int) -> None:
        for base, buf in self.allocations.items():
            if base <= ptr and ptr + count <= base + ctypes.sizeof(buf):
                return
        raise AssertionError(f"device range {ptr:#x}+{count} lies outside every allocation")

    def view(self, ptr: int, shape: tuple[int, ...]) -> np.ndarray:
        """Simulated device memory as a float32 array (bounds-checked)."""
        count = int(np.prod(shape))
        self.check_range(ptr, count * 4)
        return np.ctypeslib.as_array((ctypes.c_float * count).from_address(ptr)).reshape(shape)
