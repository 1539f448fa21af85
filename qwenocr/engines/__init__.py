"""Inference engines behind one small protocol (`base.Backend`): MLX, llama.cpp and
OpenAI-compatible servers, built by `factory`. Each engine's library is imported only when
it is built; what qwenocr changes inside llama-cpp-python is kept in `llamacpp_patches`.
"""
