"""Model files: which files make a model (shards, projectors, MLX file sets), where they
are (a local path or the Hugging Face cache), and how they are pulled, listed and removed.
"""
