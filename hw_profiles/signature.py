"""Layer signatures (what a LUT row is keyed by), the profiling rank grid, and what gets measured.

Layers of equal signature (same op, channels, geometry, input size, batch, dtype, bias) share LUT
rows, whatever their names. A decomposed layer is measured as the whole factor sequence, as it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

from haloc.decomposition import LayerSpec
from haloc.errors import BadInputError


@dataclass(frozen=True)
class LayerSignature:
    op: str  # "conv2d" or "linear"
    c_in: int
    c_out: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    input_hw: tuple[int, int] = (1, 1)  # (1, 1) for linear layers
    batch: int = 1
    dtype: str = "float32"
    bias: bool = False

    @property
    def kind(self) -> str:
        """Decomposition used at rank > 0: "tucker2" for KxK convs, "svd" for 1x1 convs and Linear."""
        return "tucker2" if self.op == "conv2d" and self.kernel != (1, 1) else "svd"

    @property
    def max_rank(self) -> int:
        return max(self.c_in, self.c_out) if self.kind == "tucker2" else min(self.c_in, self.c_out)

    @property
    def output_hw(self) -> tuple[int, int]:
        return tuple(
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, k, s, p, d in zip(self.input_hw, self.kernel, self.stride, self.padding, self.dilation)
        )

    @property
    def key(self) -> str:
        """Stable string key, e.g. conv2d_i64_o64_k3x3_s1x1_p1x1_d1x1_hw56x56_b1_float32_nobias."""
        pair = lambda t: f"{t[0]}x{t[1]}"  # noqa: E731
        return (f"{self.op}_i{self.c_in}_o{self.c_out}_k{pair(self.kernel)}_s{pair(self.stride)}"
                f"_p{pair(self.padding)}_d{pair(self.dilation)}_hw{pair(self.input_hw)}_b{self.batch}"
                f"_{self.dtype}_{'bias' if self.bias else 'nobias'}")

    @classmethod
    def from_spec(cls, spec: LayerSpec, batch: int, dtype: str) -> LayerSignature:
        """Signature of a traced layer spec (`decomposable_layers(model, example_input)`)."""
        if spec.op == "conv2d" and spec.input_hw is None:
            raise BadInputError(f"layer {spec.name!r} has no input size; trace it with "
                                f"haloc.decomposable_layers(model, example_input)")
        return cls(spec.op, spec.in_channels, spec.out_channels, tuple(spec.kernel_size), tuple(spec.stride),
                   tuple(spec.padding), tuple(spec.dilation), tuple(spec.input_hw or (1, 1)), int(batch), dtype,
                   bool(spec.bias))


def profiling_ranks(spec: LayerSpec | LayerSignature, rank_step: int) -> list[int]:
    """Ranks measured for one layer: 0 (the original layer), 1, every multiple of `rank_step` below
    the layer's max rank, and the max rank itself (the exact decomposition), ascending.

    Ranks between grid points are interpolated by `LatencyTable.candidate_latencies`.
    """
    if rank_step < 1:
        raise BadInputError(f"rank_step {rank_step!r} must be an integer >= 1")
    top = spec.max_rank
    return sorted({0, 1, top, *range(rank_step, top, rank_step)})


def _torch_dtype(name: str):
    import torch

    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[name]


def build_module(sig: LayerSignature, rank: int, seed: int = 0):
    """The module that runs for (signature, rank), random weights: rank 0 is the original Conv2d /
    Linear, otherwise haloc's Tucker2Conv / SVDConv2d / SVDLinear (float32, CPU; move it yourself)."""
    import torch

    from haloc.decomposition import LayerSpec, build_layer

    if not 0 <= rank <= sig.max_rank:
        raise BadInputError(f"rank {rank} out of range for {sig.key}; allowed 0..{sig.max_rank}")
    torch.manual_seed(seed)
    spec = LayerSpec(sig.key, sig.kind, sig.op, sig.c_in, sig.c_out, sig.kernel, sig.stride, sig.padding,
                     sig.dilation, sig.bias)
    return build_layer(spec, rank)  # rank 0 = KEEP_WHOLE: the original layer


def example_input(sig: LayerSignature, device: str = "cpu"):
    """A random input of the layer's shape: (N, C_in, H, W) for conv, (N, C_in) for linear."""
    import torch

    shape = (sig.batch, sig.c_in) if sig.op == "linear" else (sig.batch, sig.c_in, *sig.input_hw)
    return torch.randn(shape, device=device, dtype=_torch_dtype(sig.dtype) if sig.dtype in
                       ("float32", "float16", "bfloat16") else torch.float32)


def zigzag_workloads(sig: LayerSignature, rank: int) -> list:
    """The ZigZag layer sequence that runs for (signature, rank); Linear is a 1x1 conv on 1x1.

    ZigZag's workload has no dilation: dilated convs are simulated as if dense (none in our models).
    """
    from .zigzag_backend import ConvWorkload

    b, hw, out_hw = sig.batch, sig.input_hw, sig.output_hw
    if rank == 0:
        return [ConvWorkload(sig.c_in, sig.c_out, sig.kernel, sig.stride, sig.padding, hw, b)]
    if sig.kind == "svd":  # in -> r (original stride/padding) -> out
        return [ConvWorkload(sig.c_in, rank, (1, 1), sig.stride, sig.padding, hw, b),
                ConvWorkload(rank, sig.c_out, (1, 1), (1, 1), (0, 0), out_hw, b)]
    r_in, r_out = min(rank, sig.c_in), min(rank, sig.c_out)
    return [ConvWorkload(sig.c_in, r_in, (1, 1), (1, 1), (0, 0), hw, b),
            ConvWorkload(r_in, r_out, sig.kernel, sig.stride, sig.padding, hw, b),
            ConvWorkload(r_out, sig.c_out, (1, 1), (1, 1), (0, 0), out_hw, b)]
