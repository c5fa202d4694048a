"""bcos_clip.train"""
