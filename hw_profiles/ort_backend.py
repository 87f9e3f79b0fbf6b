"""The onnxruntime backend: a layer or a whole model timed as ONNX in ONNX Runtime's CPU provider, the
runtime people deploy CNNs on CPUs with.

`OrtModule(module, x, threads)` exports `module` (eval mode, random weights as measured) to ONNX in
memory, opens an InferenceSession with `threads` intra-op threads (one inter-op thread, sequential
execution, every graph optimisation on: what a deployment would use), and is called like the torch
module it replaces (`m(x)`), so that hw_profiles.timing times it unchanged. The input of the call is
ignored: the feed is the numpy copy of `x` made once, as a deployed service would hold its buffer.

Layers are exported with torch's TorchScript-based exporter: it takes tens of milliseconds for one
layer where the dynamo exporter (haloc.export_onnx, for the artifacts users keep) takes seconds,
and a LUT exports hundreds of layers.
"""
from __future__ import annotations

import io
import warnings


class OrtModule:
    def __init__(self, module, x, threads: int | None = None):
        import onnxruntime as ort
        import torch

        buf = io.BytesIO()
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
            torch.onnx.export(module.eval(), (x,), buf, dynamo=False, input_names=["x"], output_names=["y"],
                              opset_version=17)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads or 0  # 0: ORT's default (the machine's cores)
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.log_severity_level = 3  # errors only: its warnings are about the graph, not the timing
        # Idle intra-op threads would spin between runs and slow whatever runs next to them (the
        # reference workload the noise detection times between blocks, the other models of an
        # interleaved measurement): they sleep instead.
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
        self.feed = {"x": x.detach().cpu().numpy()}

    def eval(self) -> OrtModule:
        return self

    def __call__(self, _x=None):
        return self.session.run(None, self.feed)


def software_version() -> str:
    import onnxruntime

    return f"onnxruntime {onnxruntime.__version__}"
