"""A stand-in for TurboMind's compiled library, so that lmdeploy 0.18.0's own
TurboMind Python code runs on a machine without CUDA.

What is replaced, and why: `lmdeploy.turbomind._turbomind` (the CUDA library:
it links libcublas and cannot load here) and the CUDA device it drives -
`torch.cuda.device`, `device_count`, `get_device_name`, `mem_get_info` and
`Tensor.cuda` (there is no GPU: tensors the library would receive on the GPU
stay on the CPU, the host's memory is reported as the device's). Nothing else:
the converter, the source models (`lmdeploy/turbomind/models/*`), the builders,
the weight formats, the checkpoint reader, `TurboMind`, `TurboMindInstance`,
the serving layer and the vision encoder are the installed lmdeploy's and
transformers' own code.

The stand-in records instead of computing:

* weights: every module the builders create (`create_module`) keeps its
  config, its committed tensors (`param(name).alloc(...).copy_from(t)`) and its
  children (`add_child_raw`), so `committed(root)` gives the whole weight tree
  the engine would hold, e.g. `text_model.layers.0.attention.w_qkv.weight`.
* requests: `create_request().forward(inputs, ...)` records the request's
  tensors (`REQUESTS`; also one JSON line per request in the file named by
  $TURBOMIND_STAND_IN_LOG, for a process the test cannot look into, such as
  the API server) and finishes it at once with no generated token - there is
  no model to run.

`install()` must run before lmdeploy.turbomind is imported.
"""

from __future__ import annotations

import contextlib
import copy
import enum
import json
import os
import sys
import types
from typing import Any

import torch

MODULE_NAME = "lmdeploy.turbomind._turbomind"
REQUESTS: list[dict[str, Any]] = []  # every request the engine received, in order
MODEL_COMMS: list[Any] = []  # every engine created
LOG_ENV = "TURBOMIND_STAND_IN_LOG"  # set: requests are also appended to this file as JSON lines


class DataType(enum.Enum):
    TYPE_INVALID = 0
    TYPE_BOOL = 1
    TYPE_UINT8 = 2
    TYPE_UINT16 = 3
    TYPE_UINT32 = 4
    TYPE_UINT64 = 5
    TYPE_INT8 = 6
    TYPE_INT16 = 7
    TYPE_INT32 = 8
    TYPE_INT64 = 9
    TYPE_FP16 = 10
    TYPE_FP32 = 11
    TYPE_FP64 = 12
    TYPE_BF16 = 13
    TYPE_FP8_E4M3 = 14
    TYPE_FP8_E5M2 = 15
    TYPE_UINT4 = 16
    TYPE_FP4_E2M1 = 17
    TYPE_GENERIC_FLOAT = 18


_BITS = {DataType.TYPE_BOOL: 8, DataType.TYPE_UINT8: 8, DataType.TYPE_INT8: 8, DataType.TYPE_UINT16: 16,
         DataType.TYPE_INT16: 16, DataType.TYPE_FP16: 16, DataType.TYPE_BF16: 16, DataType.TYPE_UINT32: 32,
         DataType.TYPE_INT32: 32, DataType.TYPE_FP32: 32, DataType.TYPE_UINT64: 64, DataType.TYPE_INT64: 64,
         DataType.TYPE_FP64: 64, DataType.TYPE_FP8_E4M3: 8, DataType.TYPE_FP8_E5M2: 8, DataType.TYPE_UINT4: 4,
         DataType.TYPE_FP4_E2M1: 4}


class _Struct:
    """A C++ config/param struct: plain attributes with the library's defaults."""

    _defaults: dict[str, Any] = {}

    def __init__(self, *args: Any, **kwargs: Any):
        for name, value in self._defaults.items():
            setattr(self, name, copy.deepcopy(value))
        for name, value in kwargs.items():
            setattr(self, name, value)
        self._args = args

    def clone(self):
        return copy.deepcopy(self)

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({fields})"


def _struct(name: str, **defaults: Any) -> type:
    return type(name, (_Struct,), {"_defaults": {"data_type": DataType.TYPE_INVALID, **defaults}})


RopeConfig = _struct("RopeConfig", type=1, base=10000.0, dim=0, factor=1.0, max_position_embeddings=0,
                     mrope_section=None, mrope_interleaved=False)
ModelWeightConfig = _struct("ModelWeightConfig", tp_size=1)
AttentionConfig = _struct("AttentionConfig", rope=RopeConfig(), tp_rank=0, tp_size=1)
FfnConfig = _struct("FfnConfig", is_expert=False, tp_rank=0, tp_size=1)
MoeConfig = _struct("MoeConfig", expert_num=0, ep_size=1, ep_rank=0)
NormConfig = _struct("NormConfig")
LayerNormConfig = _struct("LayerNormConfig")
LinearConfig = _struct("LinearConfig", has_bias=False)
DecoderLayerConfig = _struct("DecoderLayerConfig")
ModuleListConfig = _struct("ModuleListConfig")
DeltaNetConfig = _struct("DeltaNetConfig")
QwenVitConfig = _struct("QwenVitConfig")
QwenVitBlockConfig = _struct("QwenVitBlockConfig")
InternVitConfig = _struct("InternVitConfig")
InternVitBlockConfig = _struct("InternVitBlockConfig")
EngineConfig = _struct("EngineConfig")
GenerationConfig = _struct("GenerationConfig")
SessionParam = _struct("SessionParam")
WeightQuery = _struct("WeightQuery", output_dtype=DataType.TYPE_INVALID, grouped=False)
RequestMetrics = _struct("RequestMetrics", cached_tokens=0, enqueue_time=0, scheduled_time=0)


class TokenizerInfo:  # base class of lmdeploy's TokenizerInfo (guided decoding only)
    def __init__(self, *args, **kwargs):
        self._args = args


class GrammarCompiler:
    def __init__(self, *args, **kwargs):
        raise NotImplementedError("guided decoding is not part of the stand-in")


class DataFormat(_Struct):
    def __init__(self, weight_dtype=DataType.TYPE_INVALID, block=(1, 1), scales_dtype=DataType.TYPE_INVALID,
                 zeros_dtype=DataType.TYPE_INVALID, *rest):
        super().__init__(weight_dtype=weight_dtype, block=list(block), scales_dtype=scales_dtype,
                         zeros_dtype=zeros_dtype)


class NormType(enum.Enum):
    RMS_NORM = 0
    LAYER_NORM = 1


class ActivationType(enum.Enum):
    kSilu = 0
    kSiluGptOss = 1


class TensorMap(dict):
    pass


def from_dlpack(x):
    """The library's tensor view of a host tensor: here the torch tensor itself."""
    return torch.from_dlpack(x)


# ---------------------------------------------------------------------------
# weights
# ---------------------------------------------------------------------------


class Tensor:
    """A parameter slot of a module after `alloc`; `copy_from` keeps the data."""

    def __init__(self, shape, dtype: DataType):
        self.shape = [int(s) for s in shape]
        self.type = dtype
        numel = 1
        for s in self.shape:
            numel *= s
        self.byte_size = numel * _BITS[dtype] // 8
        self.data: torch.Tensor | None = None

    def copy_from(self, tensor: torch.Tensor) -> None:
        if tensor.nbytes != self.byte_size:
            raise RuntimeError(f"copy_from: {tensor.nbytes} bytes into a slot of {self.byte_size}")
        self.data = tensor.detach().to("cpu").clone()


class _ParamSlot:
    def __init__(self, module: Module, name: str):
        self.module, self.name = module, name

    def alloc(self, shape, dtype: DataType) -> Tensor:
        if self.name in self.module.params:
            raise RuntimeError(f"param {self.name!r} allocated twice")
        slot = Tensor(shape, dtype)
        self.module.params[self.name] = slot
        return slot


class Module:
    """One C++ module handle: its config, committed tensors and children."""

    def __init__(self, config: Any):
        self.config = config
        self.params: dict[str, Tensor] = {}
        self.children: dict[str, Module] = {}
        self.plan = None

    def param(self, name: str) -> _ParamSlot:
        return _ParamSlot(self, name)

    def add_child_raw(self, name: str, child: Module) -> None:
        if name in self.children:
            raise RuntimeError(f"child {name!r} added twice")
        self.children[name] = child

    def set_plan(self, plan) -> None:
        self.plan = plan


def create_module(config) -> Module:
    return Module(config)


def committed(module: Module, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor committed under ``module``, by dotted path."""
    out = {}
    for name, slot in module.params.items():
        if slot.data is None:
            raise RuntimeError(f"{prefix}{name} allocated but never filled")
        out[prefix + name] = slot.data
    for name, child in module.children.items():
        out.update(committed(child, f"{prefix}{name}."))
    return out


def configs(module: Module, prefix: str = "") -> dict[str, Any]:
    """The config of every module under ``module``, by dotted path."""
    out = {prefix.rstrip("."): module.config}
    for name, child in module.children.items():
        out.update(configs(child, f"{prefix}{name}."))
    return out


class _Plan:
    family = "stand-in"
    bridge = (1, 1, DataType.TYPE_INVALID, DataType.TYPE_INVALID)
    shape_constraints = ((1, 1), (1, 1))

    def gate_up(self, activation, projection_n: int) -> int:
        return 0  # no fused gate/up kernel: w1w3 is [w1 | w3] along the output dim


class Gemm:
    """Kernel selection: every layout is accepted in fp16 and bf16."""

    def get_weight_plan(self, query):
        return _Plan()

    def data_types(self, data_format):
        return [DataType.TYPE_FP16, DataType.TYPE_BF16]


class _DeviceContext(contextlib.nullcontext):
    pass


# ---------------------------------------------------------------------------
# the engine and its requests
# ---------------------------------------------------------------------------


class _State:
    def __init__(self, status: int, seq_len: int):
        self.status, self.seq_len = status, seq_len


class _SharedState:
    def __init__(self, seq_len: int):
        self._state = _State(7, seq_len)  # 7: finished

    def consume(self):
        return self._state


class Request:
    def __init__(self, comm: ModelComm):
        self.comm = comm
        self.cancelled = False

    def forward(self, inputs, mm_inputs, session, gen_cfg, stream_output, enable_metrics, signal_cb):
        tensors = {k: v.clone() for k, v in inputs.items()}
        REQUESTS.append(dict(inputs=tensors, mm_inputs=mm_inputs, session_id=getattr(session, "id", None),
                             max_new_tokens=getattr(gen_cfg, "max_new_tokens", None)))
        log = os.environ.get(LOG_ENV)
        if log:  # a process the test cannot look into (the API server): one JSON line per request
            with open(log, "a") as f:
                f.write(json.dumps(dict(input_ids=tensors["input_ids"].tolist(), tensors=sorted(tensors))) + "\n")
        input_len = int(tensors["input_ids"].shape[0])
        outputs = TensorMap(output_ids=torch.cat([tensors["input_ids"].to(torch.int32),
                                                  torch.zeros(1, dtype=torch.int32)]))
        signal_cb()
        return outputs, _SharedState(input_len), RequestMetrics()

    def cancel(self):
        self.cancelled = True

    def set_grammar(self, grammar):
        pass


class ModelComm:
    def __init__(self, engine_config):
        self.engine_config = engine_config
        self.roots: dict[int, Module] = {}
        self.contexts: dict[int, _DeviceContext] = {}
        self.weights_processed: list[int] = []
        self.engines_created: list[int] = []
        MODEL_COMMS.append(self)

    def create_context(self, device_id: int):
        self.contexts[device_id] = _DeviceContext()

    def create_root(self, device_id: int):
        self.roots[device_id] = Module("ModelRoot")

    def context(self, g: int):
        return self.contexts[g]

    def gemm(self, g: int):
        return Gemm()

    def root(self, g: int) -> Module:
        return self.roots[g]

    def attn_tp_rank(self, g: int) -> int:
        return 0

    mlp_tp_rank = ep_rank = model_tp_rank = attn_tp_rank

    def is_dummy_node(self) -> bool:
        return False

    def process_weight(self, device_id: int):
        self.weights_processed.append(device_id)

    def create_engine(self, device_id: int):
        self.engines_created.append(device_id)

    def create_request(self) -> Request:
        return Request(self)

    def get_schedule_metrics(self, rank: int):
        return _Struct(active_seqs=0, waiting_seqs=0, cache_usage=0.0, prefix_cache_hit_rate=0.0,
                       scheduler_tick=0)


class TurboMind:
    @staticmethod
    def create(model_dir: str = "", engine_config=None, **kwargs) -> ModelComm:
        return ModelComm(engine_config)


class _NoDevice:
    """`torch.cuda.device(i)`: there is no GPU to switch to."""

    def __init__(self, device=None):
        self.device = device

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _host_memory(device=None) -> tuple[int, int]:
    """`torch.cuda.mem_get_info`: the host's memory stands in for the GPU's."""
    import os

    page = os.sysconf("SC_PAGE_SIZE")
    return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page


def install() -> types.ModuleType:
    """Register the stand-in as lmdeploy.turbomind._turbomind and keep
    tensors meant for the GPU on the CPU."""
    if "lmdeploy.turbomind" in sys.modules and MODULE_NAME not in sys.modules:
        raise RuntimeError("install() must run before lmdeploy.turbomind is imported")
    module = sys.modules[__name__]
    sys.modules[MODULE_NAME] = module
    torch.cuda.device = _NoDevice
    torch.cuda.device_count = lambda: 1
    torch.cuda.get_device_name = lambda *a, **k: "TurboMind stand-in (no GPU)"
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.cuda.mem_get_info = _host_memory
    return module
