"""Evaluation datasets: CLIP_benchmark ``wds/`` folders, Hugging Face ``datasets`` and image folders,
opened by ``registry.open_dataset`` behind one reader interface."""
