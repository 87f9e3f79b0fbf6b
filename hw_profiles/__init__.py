"""Hardware profiles, layer signatures, latency tables (LUTs) and measuring backends; no Ray here.

    profile.py      HardwareProfile (one YAML per profile in profiles/), list_profiles, get_profile
    signature.py    LayerSignature (the LUT key), profiling_ranks, the module / ZigZag workloads to measure
    lut.py          the Parquet schema, read/write/merge, LatencyTable (curves, candidate latencies)
    timing.py       torch timing on CPU (fixed threads) and CUDA (events)
    measure.py      (signature, rank) items -> LUT rows on one profile; whole-model latency
    calibration.py  end-to-end fit measured ~ a + b * sum(LUT)
    zigzag_backend.py  the ZigZag ASIC simulator
"""
