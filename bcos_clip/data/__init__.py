"""Data: training streams (``stream``: img2dataset / ImageNet shards, image folders, transforms,
calibration images), evaluation readers (``readers``: CLIP_benchmark ``wds/``, HF datasets, image folders
behind one interface) and the synthetic shapes world (``shapes``)."""
