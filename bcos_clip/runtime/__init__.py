"""The bottom layer every package may use (torch, yaml and the standard library only): the device picker,
precision, torchrun init and process-group helpers, the one YAML reader, shipped-file lookup, content
digests, run-file names and readers, and the file-system rules of every writing command."""
