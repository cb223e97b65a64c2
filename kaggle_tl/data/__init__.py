"""The data: a competition folder read into ids, labels, classes and image paths; its CSVs, images and hashes; the demo."""
