"""What operators see and rely on: structured logs and trace context (`observe`), Prometheus
metrics (`metrics`), and the one-live-process-per-executor-id lease (`lease`).

The bottom of the library: imports only `timestep.errors` and `timestep.settings`.
"""
