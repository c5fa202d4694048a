"""bcos_clip.data"""
