"""The networks and how they run: ESM-2 packed forward, DNABERT-S, varlen attention, Triton kernels,
token packing, the batch runner, the VirNucPro classifier, and the store namespaces of the encoders."""
