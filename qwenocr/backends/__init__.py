"""Inference engines behind one small interface (see `base.Backend`).

Each engine module imports its heavy library inside `load`, never at import time, so
`qwenocr --help` and `qwenocr doctor` stay fast and work without any engine installed.
"""
