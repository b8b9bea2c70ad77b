"""An example of bringing your own model and data to a sweep: `examples/byo_gru.yaml`."""
