"""Training data: shard and folder sources, the epoch stream and its DataLoader, transforms, and the
calibration images of BatchNorm refits."""
