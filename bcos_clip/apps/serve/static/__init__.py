"""The explorer page of `bcos-clip serve` (plain HTML/JS/CSS, no build step), read via importlib.resources."""
