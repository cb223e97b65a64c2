"""The on-disk cache: content-keyed entries (features, head fits, predictions, figures), read-only layers, cleaning."""
