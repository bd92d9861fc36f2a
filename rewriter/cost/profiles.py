"""Device profiles for the latency model: the figures, and where each one comes from.

Sources (public; fetched through the project's reference search, cited by repository and path):

[VPUNN-HW27]  intel/npu-nn-cost-model, include/vpu/device_HW_characteristics_VPU2_7.h (VPU2_7_HWCharacteristics):
              dpu_freq_clk 1300 MHz, cmx_freq_clk 975 MHz, cmx_word_size 16 B, dpu_cmx_num_read_ports 8,
              dram_bandwidth 27000 MB/s, nr_macs 2048, fp_ratio 2, nr_ppe 64, input_channels_mac 8,
              nDPU_per_tile 1, dma_ports 2; DMA latency: DRAM 956 ns.
[VPUNN-HW20]  intel/npu-nn-cost-model, include/vpu/device_HW_characteristics_VPU2.h (VPU2_0_HWCharacteristics):
              dpu_freq_clk 700 MHz, cmx_freq_clk 700 MHz, dram_bandwidth 20000 MB/s, nr_macs 256, fp_ratio 4,
              nr_ppe 16, input_channels_mac 1, nDPU_per_tile 5.
[VPUNN-THEO]  intel/npu-nn-cost-model, include/vpu/dpu_theoretical_cost_provider.h (DPUTheoreticalCycles):
              cycles = kernel MACs / nr_macs, times fp_ratio when the op computes in FP16; for every op other
              than (CM_)CONVOLUTION the MAC count is divided by input_channels_mac (so depthwise/pool use 1/8 of
              the 2.7 array and all of the 2.0 one); ELTWISE = elements / nr_ppe.
[VPUNN-CMX]   intel/npu-nn-cost-model, include/vpu/validation/device_valid_valuesVPU2.h and
              device_valid_valuesVPU2_7.h: cmx_KB_sizes VPU_2_0 = 1024 KB, VPU_2_7 = 2048 KB.
[VPUNN-MODES] intel/npu-nn-cost-model, include/vpu/device_layer_properties/device_layer_properties_VPU2_7.h:
              DW_CONVOLUTION/AVEPOOL/MAXPOOL only in CUBOID_16x16 mode; ELTWISE in CUBOID_8x16 (16-channel
              granularity of the MAC array).
[VPUNN-SHV27] intel/npu-nn-cost-model, src/shave/shave_layers_vpu_2_7.csv: SHAVE activation kernels on 2.7 as
              t_us = intercept + slope * output_bytes (DPU 1300 MHz, SHAVE 975 MHz); e.g. sigmoid slope
              1.48e-4 us/B, intercept 3.13 us; "default" slope 3.85e-4 us/B; intercepts 2–4 us.
[VPUNN-INTERP] intel/npu-nn-cost-model, include/vpu/shave/poly_models.h (InterpolateWHModel_1, registered as
              "interpolatewh_1" for VPU 2.7 in src/shave/shave_collection.cpp): t_us = 22.84 + 1.117*H + 2.001*W
              + 0.00805*out_size + 0.00677*out_size/W (input H, W; out_size in elements).
[NPU-30XX]    openvinotoolkit/npu_plugin, tests/lit (vpux-opt --init-compiler="vpu-arch=VPUX30XX"), i.e. KMB:
              4 NCE tiles at 700 MHz x 5 DPUs, 16 SHAVE_UPA, 1 DMA_NN, 917504 B usable CMX_NN per tile,
              DDR derate factor 0.6.
[NPU-37XX]    openvinotoolkit/npu_plugin, tests/lit (vpux-opt --init-compiler="vpu-arch=VPUX37XX"), i.e. MTL:
              2 NCE tiles at 1300 MHz x 1 DPU, 2 SHAVE_ACT per tile, 2 DMA_NN, 1982464 B usable CMX_NN per tile.
[OV-NPU]      docs.openvino.ai (2023.3) "NPU Device": NPU 3720 in Intel Core Ultra (Meteor Lake); inference
              precisions FP32/FP16 and U8, "Computation precision for the HW is FP16" — so FP32 models are
              costed as FP16 on the NPU profiles.
[NPU-TILER]   openvinotoolkit/npu_plugin, src/vpux_compiler/src/dialect/VPUIP/dpu_tiler.cpp:
              RUNTIME_OVERHEAD_PER_WORKLOAD = 105 (DPU cycles), passed to VPUNN::dpu_schedule(nDPU, costs,
              overhead) (include/vpu/utils.h): each workload adds 105 cycles on the DPU that runs it ("experiential
              param for VPUX30XX"; for 37XX VPUNN folds it into its learned model, so the same figure is used).
[VPUNN-LAYER] intel/npu-nn-cost-model, include/vpu_layer_strategy.h (VPULayerStrategy) and
              src/vpu_layer_cost_model.cpp: a layer's cost is its DPU workloads; input_fetching /
              output_spilling (tensor in DDR) add DMA, both default false (producer -> consumer stays in CMX);
              prefetching default true (weights DMA overlaps earlier layers). validation/interface_valid_values.h:
              80 KB of CMX reserved for the runtime (cmx_memory_80K_fixed_overhead).
[VF]          openvinotoolkit/vpux_plugin, VPU vertical fusion / tiling (VPU::TilingStrategy, "vertical-fusion"):
              a layer too large for CMX is tiled spatially; a chain of single-consumer layers is tiled together
              so the intermediate tensors stay in CMX. Modelled here as: a tensor goes to DDR only when it does
              not fit CMX whole AND it has several readers (skip connections) or is a graph input/output.
[MIDAS-CTX]   /work/shared/CONTEXT.md (project brief): dw3x3+pw1x1 vs a 64->64 conv3x3 is "several times"
              cheaper on VPU 2.0 but "about 2x" on VPU 2.7; INT8 about 2x (2.7) / 4x (2.0) faster than FP16.

What is sourced and what is assumed is marked per field below ("src" / "assumed" / "fit"). The NPU profiles
are analytic models, not device measurements: use them to rank rewrites, not as promises of fps.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

FRAME_BUDGET_MS = 1000.0 / 60.0  # 60 fps video requirement: 16.7 ms per frame


@dataclass(frozen=True)
class NPUProfile:
    """An NPU (VPU 2.0 / 2.7) profile: DPU MAC array, SHAVE DSPs, CMX and DDR figures."""

    name: str
    description: str
    dpu_clock_mhz: float          # src: VPUNN-HW20/27
    tiles: int                    # src: NPU-30XX/37XX (NCE clusters)
    dpus_per_tile: int            # src: VPUNN-HW, NPU-30XX/37XX
    int8_macs_per_dpu: int        # src: VPUNN nr_macs (MACs/cycle at 8 bit)
    fp16_ratio: float             # src: VPUNN fp_ratio (FP16 is this many times slower than INT8)
    input_channels_mac: int       # src: VPUNN; depthwise/pool get nr_macs / input_channels_mac
    dw_efficiency: float          # assumed/fit: extra depthwise derate (stalls, halo, 16x16 cuboid), see notes
    ppe_per_dpu: int              # src: VPUNN nr_ppe (eltwise elements/cycle per DPU)
    channel_group: int            # src: VPUNN-MODES (16-channel granularity)
    cmx_bytes_per_tile: int       # src: NPU-30XX/37XX usable CMX_NN
    cmx_bytes_per_cycle: float    # src: NPU plugin CMX_NN bandwidth 32 B/cycle (both arches)
    ddr_gbps: float               # src: VPUNN dram_bandwidth
    dma_latency_us: float         # src: VPUNN-HW27 DRAM latency 956 ns (2.0: assumed same)
    workload_overhead_cycles: int  # src: NPU-TILER (105 DPU cycles per workload)
    dw_channels_per_workload: int  # src: VPUNN-MODES / valid values (depthwise workloads of <= 64 channels on 2.7)
    shaves: int                   # src: NPU-30XX (16 UPA) / NPU-37XX (2 ACT x 2 tiles)
    shave_clock_mhz: float        # src: VPUNN-SHV27 (975); 2.0 assumed = DPU clock
    shave_us_per_byte: float      # src: VPUNN-SHV27 "default" slope (one SHAVE, 975 MHz)
    shave_intercept_us: float     # src: VPUNN-SHV27 typical intercept
    interp_coeffs: tuple[float, float, float, float, float]  # src: VPUNN-INTERP (one SHAVE, 975 MHz)
    kind: str = "npu"
    notes: tuple[str, ...] = ()

    @property
    def dpus(self) -> int:
        return self.tiles * self.dpus_per_tile

    @property
    def shave_scale(self) -> float:
        """SHAVE time multiplier relative to the 975 MHz SHAVEs the VPUNN SHAVE figures were measured on."""
        return 975.0 / self.shave_clock_mhz

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


MTL = NPUProfile(
    name="mtl",
    description="Meteor Lake NPU (VPU 2.7 / NPU 3720): 2 NCE tiles x 1 DPU of 2048 INT8 MACs at 1.3 GHz",
    dpu_clock_mhz=1300.0,
    tiles=2,
    dpus_per_tile=1,
    int8_macs_per_dpu=2048,
    fp16_ratio=2.0,
    input_channels_mac=8,
    # 1/8 of the array comes from VPUNN (input_channels_mac); the further 1/3 is fit so a dw3x3+pw1x1 pair
    # comes out ~2x cheaper than a 64->64 conv3x3, the figure quoted for VPU 2.7 [MIDAS-CTX].
    dw_efficiency=1.0 / 3.0,
    ppe_per_dpu=64,
    channel_group=16,
    cmx_bytes_per_tile=1982464,
    cmx_bytes_per_cycle=32.0,
    ddr_gbps=27.0,
    dma_latency_us=0.956,
    workload_overhead_cycles=105,
    dw_channels_per_workload=64,
    shaves=4,
    shave_clock_mhz=975.0,
    shave_us_per_byte=3.846e-4,
    shave_intercept_us=2.8,
    interp_coeffs=(22.84, 1.117, 2.001, 0.00805, 0.00677),
    notes=(
        "FP32 models are costed as FP16 (NPU HW computes FP16) [OV-NPU]",
        "depthwise/pool: nr_macs/input_channels_mac [VPUNN-THEO] x dw_efficiency (fit to [MIDAS-CTX])",
        "resize placement mirrors the NPU compiler (rewriter/cost/lowering.py); SHAVE interpolate [VPUNN-INTERP]",
        "tensors > CMX are tiled; only multi-reader or graph-boundary tensors pay DDR [VF, VPUNN-LAYER]",
        "per-workload overhead 105 DPU cycles [NPU-TILER]",
    ),
)

KMB = NPUProfile(
    name="kmb",
    description="Keem Bay (VPU 2.0): 4 NCE tiles x 5 DPUs of 256 INT8 MACs at 700 MHz",
    dpu_clock_mhz=700.0,
    tiles=4,
    dpus_per_tile=5,
    int8_macs_per_dpu=256,
    fp16_ratio=4.0,
    input_channels_mac=1,
    # VPUNN gives depthwise the full 2.0 array; halve it for halo/cuboid losses so a dw+pw pair lands at the
    # "several times cheaper" the brief quotes for VPU 2.0 [MIDAS-CTX] (assumed).
    dw_efficiency=0.5,
    ppe_per_dpu=16,
    channel_group=16,
    cmx_bytes_per_tile=917504,
    cmx_bytes_per_cycle=32.0,
    ddr_gbps=20.0,
    dma_latency_us=0.956,
    workload_overhead_cycles=105,
    dw_channels_per_workload=16,
    shaves=16,
    shave_clock_mhz=700.0,
    shave_us_per_byte=3.846e-4,
    shave_intercept_us=2.8,
    interp_coeffs=(22.84, 1.117, 2.001, 0.00805, 0.00677),
    notes=(
        "FP32 models are costed as FP16 [OV-NPU]",
        "SHAVE kernel costs are the VPU 2.7 figures scaled to an assumed 700 MHz UPA SHAVE clock",
        "DDR bandwidth 20 GB/s [VPUNN-HW20]; CMX 896 KB usable per tile [NPU-30XX]",
        "per-workload overhead 105 DPU cycles [NPU-TILER]; depthwise workloads of 16 channels (VPU 2.0 DPUs)",
    ),
)


@dataclass
class CPUProfile:
    """OpenVINO CPU profile: per op kind, time = overhead + max(work / rate, bytes / mem_gbps)."""

    name: str
    description: str
    # kind -> {"metric": "macs"|"bytes", "rate": MACs/us or bytes/us, "overhead_us": float}
    kinds: dict[str, dict[str, Any]]
    mem_gbps: float
    int8_speedup: float
    source: str = "default"
    machine: dict[str, Any] = field(default_factory=dict)
    kind: str = "cpu"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> CPUProfile:
        keys = {"name", "description", "kinds", "mem_gbps", "int8_speedup", "source", "machine"}
        return cls(**{k: v for k, v in d.items() if k in keys})


# Shipped default: relative rates from calibrate_cpu() on the reference machine (2-core AMD EPYC, AVX2/FMA,
# no VNNI, OpenVINO 2026.4, FP32 hint, latency hint), fitted on the trained MiDaS-small proxy at 288x512 and the
# six variants bench/cost_truth.py builds (dwpw rank 1, rank 2 multiplier, rank 2 split, int8, and
# asym_interp+dwpw+int8 at rank 1 and 2), plus the single-op probe graphs, all run round-robin. The machine was
# shared (load ~10 on 2 cores), so every rate was multiplied and every overhead divided by one factor (3.79;
# mem_gbps with them) to put the proxy at 200 ms, inside the 135-243 ms measured there uncontended
# [MIDAS-CTX]; ratios between models are unchanged by that scaling. With it, predicted vs measured CPU speedup
# per pass (bench/cost_truth.py, 21 interleaved A/B rounds): dwpw r1 1.67 vs 1.72, r2 1.13 vs 1.12, r2 split
# 1.28 vs 1.28, int8 3.02 vs 2.96, asym+dwpw r1+int8 4.30 vs 4.73, asym+dwpw r2+int8 1.55 vs 1.77.
# Kernel facts it encodes: a depthwise conv with channel multiplier > 1 runs ~2.5x slower per MAC than a plain
# one in FP32 and ~10x slower in INT8 (dwconv_mult_int8), while plain INT8 depthwise is ~2x faster than FP32.
# Per-node overheads of the conv kinds are not from that fit (it clamps them to ~0 on MiDaS-sized layers) but
# from perf counters of single-op graphs at 8 channels, 16x16, where kernels are overhead-bound: conv3x3
# ~12 us, 1x1 ~6 us, depthwise ~5 us; they add < 1% to the proxy. "rate" is MACs (or bytes) per microsecond.
# Run `calibrate_cpu` on your machine to replace it (cache dir).
DEFAULT_CPU = CPUProfile(
    name="cpu",
    description="OpenVINO CPU plugin, FP32 (default profile of a 2-core AVX2 machine)",
    kinds={
        "conv": {"metric": "macs", "rate": 68100.0, "overhead_us": 12.0},
        "pwconv": {"metric": "macs", "rate": 40060.0, "overhead_us": 6.0},
        "gconv": {"metric": "macs", "rate": 51120.0, "overhead_us": 1.3},
        "dwconv": {"metric": "macs", "rate": 11840.0, "overhead_us": 5.0},
        "dwconv_mult": {"metric": "macs", "rate": 4660.0, "overhead_us": 5.0},
        "convtranspose": {"metric": "macs", "rate": 55950.0, "overhead_us": 1.3},
        "dwconvtranspose": {"metric": "macs", "rate": 2760.0, "overhead_us": 1.3},
        "pool": {"metric": "macs", "rate": 4720.0, "overhead_us": 1.3},
        "resize": {"metric": "bytes", "rate": 6830.0, "overhead_us": 0.0},
        "eltwise": {"metric": "bytes", "rate": 117500.0, "overhead_us": 1.1},
        "activation": {"metric": "bytes", "rate": 19330.0, "overhead_us": 9.3},
        "concat": {"metric": "bytes", "rate": 29170.0, "overhead_us": 0.6},
        "pad": {"metric": "bytes", "rate": 14410.0, "overhead_us": 1.1},
        # a FakeQuantize OpenVINO CPU cannot fuse into a producer (after a Resize, Concat, the input)
        "quant": {"metric": "bytes", "rate": 23960.0, "overhead_us": 5.8},
        "other": {"metric": "bytes", "rate": 16000.0, "overhead_us": 5.0},
        # INT8 forms (QDQ ONNX / FakeQuantize IR): each its own kernel on OpenVINO CPU
        "conv_int8": {"metric": "macs", "rate": 262190.0, "overhead_us": 12.0},
        "pwconv_int8": {"metric": "macs", "rate": 174440.0, "overhead_us": 6.0},
        "dwconv_int8": {"metric": "macs", "rate": 25910.0, "overhead_us": 5.0},
        "dwconv_mult_int8": {"metric": "macs", "rate": 2610.0, "overhead_us": 13.2},
    },
    mem_gbps=75.8,
    int8_speedup=3.85,  # conv_int8 / conv rate; used for INT8 kinds without their own entry (gconv, pool, ...)
    source="default",
    machine={"cpu": "AMD EPYC (reference)", "flags": ["avx2", "fma"], "cores": 2},
)

NPU_PROFILES: dict[str, NPUProfile] = {"kmb": KMB, "mtl": MTL}
