"""HTTP inference: `cnnzoo serve`, an ASGI app (Starlette on uvicorn) with micro-batching, metrics and
the draw-a-digit page.

    from cnnzoo.serve import create_app, ServeSettings
    app = create_app({"lenet5-mnist": cnnzoo.load("lenet5:mnist")}, ServeSettings(max_batch_size=32))

Needs the `serve` extra (`pip install 'cnnzoo[serve]'`): starlette, uvicorn, python-multipart,
prometheus_client. `routes.py` has the routes (a new one: a handler there and a line in `ROUTES`),
`v2.py` the Open Inference Protocol's (KServe v2, Triton's REST API) and `v2_codec.py` its bodies,
`requests.py` the reading of a request, its limits and its wait for a forward pass, `app.py` the
settings, the app's state, lifespan and errors, `observe.py` the metrics and access log per request,
`batcher.py` the micro-batcher, `served.py` what one model does per request, `run.py` the command,
`static/index.html` the page.
"""

from .app import ApiError, ServeSettings, create_app
from .batcher import BatchResult, MicroBatcher, Overloaded
from .run import load_models, serve

__all__ = [
    "ApiError",
    "BatchResult",
    "MicroBatcher",
    "Overloaded",
    "ServeSettings",
    "create_app",
    "load_models",
    "serve",
]
