"""The bottom layer every package may use (stdlib only here): file-system rules shared by all commands."""
