"""A backend for any OpenAI-compatible chat-completions server.

vLLM, SGLang, llama.cpp's server (and llama-cpp-python's), Ollama and LM Studio all
speak this protocol, which is how a cluster (tensor-parallel replicas behind a load
balancer) or a workstation serves Qwen 3.5 to qwenocr (docs/scaling.md).

- `backend`: `OpenAIBackend`, the engine: one streamed chat completion per page;
- `client`: servers, round-robin, retries and cool-downs, requests, model listing,
  the API key, and `check_server` for `doctor --base-url`;
- `adaptive`: each server's limit on requests in flight, lowered when it can't take
  more and raised again when it copes;
- `probe`: `probe_parallel`, how many requests at once a server serves (`doctor`);
- `stream`: reading a streamed answer, with a leading think block dropped;
- `encode`: the page image as a PNG or JPEG `data:` URI.
"""

from qwenocr.engines.openai.backend import OpenAIBackend
from qwenocr.engines.openai.client import api_key_from_env, check_server
from qwenocr.engines.openai.encode import encode_image
from qwenocr.engines.openai.probe import probe_parallel

__all__ = ["OpenAIBackend", "api_key_from_env", "check_server", "encode_image", "probe_parallel"]
