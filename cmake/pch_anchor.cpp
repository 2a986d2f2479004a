// Anchor translation unit for the shared LibTorch precompiled header (see cab_use_torch_pch).
