"""The data: a competition folder read into ids, labels, classes and image paths; its CSVs, archives and images."""
