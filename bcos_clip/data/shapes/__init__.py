"""The synthetic shapes world: scene primitives (``scene``), training scenes, captions and evaluation
tasks (``world``), and the writer of its shards and benchmark folders (``writer``)."""
