"""`onlinespec serve`: an OpenAI-compatible HTTP server whose draft keeps learning from the traffic it serves.

One file per concern (the CLI command is onlinespec/commands/serve.py): `launch.py` (serve a loaded pipeline),
`address.py` (checking the listening address), `server.py` (start-up, signals, graceful shutdown and the
final checkpoint), `app.py` (routes), `schemas.py` (request validation), `worker.py` (the bounded queue and the
batch-1 decoding thread that feeds the learner), `metrics.py` (Prometheus metrics, exposed by prometheus-client),
`errors.py` (OpenAI-style errors).
Import it lazily: the library works without FastAPI installed.
"""
