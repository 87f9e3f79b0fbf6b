"""Code that runs on the Ray nodes: profiler actors (profiler.py), node hardware detection (detect.py)."""
