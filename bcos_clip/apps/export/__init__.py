"""`bcos-clip export`: a hub-style folder of a checkpoint (``hub_folder``) with its model card."""
