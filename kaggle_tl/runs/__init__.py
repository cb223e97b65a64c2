"""The run folder: what one run computed and chose (record, predictions), queries over runs, and the submissions it writes."""
