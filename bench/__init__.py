"""The benchmarks behind `quill bench` (speed, memory and what readers see), each printed as JSON."""
