"""Inference engines behind one small protocol (`base.Backend`): MLX, llama.cpp and
OpenAI-compatible servers. Each engine's library is imported only when it is built.
"""
