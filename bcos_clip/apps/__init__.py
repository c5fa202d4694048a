"""bcos_clip.apps"""
