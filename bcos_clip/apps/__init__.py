"""The programs that chain the libraries and write files: ``demo/``, ``bench/``, ``serve/``, ``export/``
(hub folder + model card), ``explain_files`` (`bcos-clip explain`) and ``localize`` (`bcos-clip localize`)."""
