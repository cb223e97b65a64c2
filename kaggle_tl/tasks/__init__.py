"""The task: target encoding, splitter, decision rule and metric (one place knows)."""
